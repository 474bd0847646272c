package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/dlq"
	"github.com/outboxrelay/outbox/internal/testutil"
)

// TestOperatorCommandsEndToEnd drives list, show, purge, status and prune
// against dead letters and events a running relay produced.
func TestOperatorCommandsEndToEnd(t *testing.T) {
	t.Parallel()
	p := newPoisonSetup(t)
	relay := startRelay(t, p.cfgPath)
	relay.waitLog("streaming started", 30*time.Second)
	p.insert(t, "order", "order.created", 4)
	payIDs := p.insert(t, "payment", "payment.captured", 3)
	p.waitDeadLetters(t, 3, 30*time.Second)
	waitDelivered(t, p.o, 30*time.Second)

	// list: table and JSON.
	res := p.cli(t, "dlq", "list")
	if res.code != 0 || !strings.HasPrefix(res.stdout, "ID  LAST FAILED") || strings.Count(res.stdout, "\n") != 4 {
		t.Fatalf("dlq list: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = p.cli(t, "dlq", "list", "--json", "--event-type", "payment.*", "--aggregate", "payment")
	var ls []dlq.Letter
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &ls) != nil || len(ls) != 3 {
		t.Fatalf("dlq list --json: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, l := range ls {
		if l.Route != "payments" || l.Sink != "bus" || l.Attempts != 1 || !strings.Contains(l.LastError, "no stream takes this subject") {
			t.Errorf("dead letter %+v", l)
		}
	}

	// show: envelope, pretty JSON payload, the attempts' errors.
	// insert gives payment-K the payload {"n": K}.
	n := strings.TrimPrefix(ls[0].AggregateID, "payment-")
	res = p.cli(t, "dlq", "show", fmt.Sprint(ls[0].ID))
	for _, want := range []string{"Dead letter", ls[0].EventID.String(), "route:           payments", `"n": ` + n, "Errors, oldest first:", "no stream takes this subject"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("dlq show lacks %q:\n%s", want, res.stdout)
		}
	}
	res = p.cli(t, "dlq", "show", fmt.Sprint(ls[0].ID), "--json")
	var shown struct {
		Payload map[string]any `json:"payload"`
	}
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &shown) != nil || fmt.Sprint(shown.Payload["n"]) != n {
		t.Errorf("dlq show --json: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	// status: the running relay holds the slot.
	res = p.cli(t, "status")
	for _, want := range []string{"backlog       0 undelivered", ", active (pid ", "slot lag", "active relay  ", " pid ", "dead letters  3", "payments  3"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, res.stdout)
		}
	}
	res = p.cli(t, "status", "--json")
	var st struct {
		Backlog struct{ Undelivered int64 }
		Slot    struct {
			Name      string
			Exists    bool
			Active    bool
			ActivePID *int   `json:"active_pid"`
			LagBytes  *int64 `json:"lag_bytes"`
		}
		Relay struct {
			Active bool
			Holder string
		}
		DeadLetters struct {
			Total   int64
			ByRoute []struct {
				Route string
				Total int64
			} `json:"by_route"`
		} `json:"dead_letters"`
	}
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &st) != nil {
		t.Fatalf("status --json: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if st.Slot.Name != p.o.Slot || !st.Slot.Exists || !st.Slot.Active || st.Slot.ActivePID == nil || st.Slot.LagBytes == nil ||
		!st.Relay.Active || !strings.Contains(st.Relay.Holder, "pid") || st.DeadLetters.Total != 3 || st.DeadLetters.ByRoute[0].Route != "payments" {
		t.Errorf("status --json: %+v\n%s", st, res.stdout)
	}
	// The same through --database-url, --schema and --slot.
	res = run(t, nil, "status", "--json", "--database-url", p.o.DatabaseURL, "--schema", p.o.Schema, "--slot", p.o.Slot)
	if res.code != 0 || !strings.Contains(res.stdout, `"active":true`) {
		t.Errorf("status with flags: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	// purge: more than one row needs --yes; nothing is deleted without it.
	res = p.cli(t, "dlq", "purge", "--route", "payments")
	if res.code != 2 || !strings.Contains(res.stderr, "pass --yes") || len(p.rows(t)) != 3 {
		t.Errorf("purge without --yes: exit %d, %d rows left\n%s", res.code, len(p.rows(t)), res.stderr)
	}
	res = p.cli(t, "dlq", "purge", "--route", "payments", "--dry-run")
	if res.code != 0 || !strings.Contains(res.stdout, "would delete 3 dead letters") || len(p.rows(t)) != 3 {
		t.Errorf("purge --dry-run: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = p.cli(t, "dlq", "purge", "--event-id", payIDs[0])
	if res.code != 0 || !strings.Contains(res.stdout, "deleted 1 dead letter:") || len(p.rows(t)) != 2 {
		t.Errorf("purge one: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = p.cli(t, "dlq", "purge", "--route", "payments", "--yes", "--json")
	var pr dlq.PurgeResult
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &pr) != nil || len(pr.Deleted) != 2 || len(p.rows(t)) != 0 {
		t.Errorf("purge --yes: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	// prune: the delivered events are older than a second by now.
	time.Sleep(1100 * time.Millisecond)
	res = p.cli(t, "prune", "--older-than", "1s", "--dry-run")
	if res.code != 0 || !strings.Contains(res.stdout, "would delete 7 delivered events") {
		t.Errorf("prune --dry-run: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = p.cli(t, "prune", "--older-than", "1s", "--batch-size", "3")
	if res.code != 0 || !strings.Contains(res.stdout, "deleted 7 delivered events") || !strings.Contains(res.stdout, "in 3 batches") {
		t.Errorf("prune: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	var left int
	p.o.Pool.QueryRow(context.Background(), `SELECT count(*) FROM `+p.o.Schema+`.events`).Scan(&left)
	if left != 0 {
		t.Errorf("%d events left after prune", left)
	}
	if code := relay.stop(); code != 0 {
		t.Fatalf("relay exited %d", code)
	}

	// With the relay stopped, status says no relay is active.
	res = p.cli(t, "status")
	if res.code != 0 || !strings.Contains(res.stdout, "inactive (no relay is streaming from it") || !strings.Contains(res.stdout, "active relay  none (the last was ") {
		t.Errorf("status with the relay stopped: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

// tableSnapshot returns every dead-letter and event row as text, to check
// that a failed command changed nothing.
func tableSnapshot(t *testing.T, o *testutil.Outbox) string {
	t.Helper()
	var s string
	err := o.Pool.QueryRow(context.Background(), `SELECT
	  coalesce((SELECT string_agg(d::text, E'\n' ORDER BY id) FROM `+o.Schema+`.dead_letters d), '') || E'\n--\n' ||
	  coalesce((SELECT string_agg(e::text, E'\n' ORDER BY id) FROM `+o.Schema+`.events e), '')`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOperatorBadInput: bad ids, durations, DSNs, configs and conflicting
// flags exit 2 (usage) or 1 (runtime) with a message that says what to do,
// change nothing, and never print a password.
func TestOperatorBadInput(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	insertDeadLetters(t, o, 3)
	if _, err := o.Pool.Exec(context.Background(), `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload, created_at, delivered_at)
	  VALUES ('order', 'o-1', 'order.created', '{}', now() - interval '30 days', now() - interval '30 days')`); err != nil {
		t.Fatal(err)
	}
	db := []string{"--database-url", o.DatabaseURL, "--schema", o.Schema}
	with := func(args ...string) []string { return append(args, db...) }
	missingCfg := filepath.Join(t.TempDir(), "nope.yaml")
	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown id", with("dlq", "show", "999"), 1, []string{"no dead letter with id 999", "hint:", "outbox dlq list"}},
		{"replay unknown id", with("dlq", "replay", "--id", "1,999"), 1, []string{"no dead letter with id 999; nothing was changed"}},
		{"purge unknown id", with("dlq", "purge", "--id", "2", "--id", "998,999"), 1, []string{"no dead letters with ids 998, 999; nothing was changed"}},
		{"show bad id", with("dlq", "show", "abc"), 2, []string{`bad dead-letter id "abc"`, "hint:"}},
		{"show event id", with("dlq", "show", "0190aaaa-0000-7000-8000-000000000001"), 2, []string{"is an event id", "--event-id"}},
		{"replay bad id", with("dlq", "replay", "--id", "x"), 2, []string{`--id: bad dead-letter id "x"`}},
		{"bad event id", with("dlq", "list", "--event-id", "nope"), 2, []string{"bad UUID"}},
		{"bad since", with("dlq", "list", "--since", "yesterday"), 2, []string{`--since: bad time "yesterday"`, "2026-03-01T12:00:00Z"}},
		{"since after until", with("dlq", "list", "--since", "1h", "--until", "2h"), 2, []string{"must be before until"}},
		{"bad glob", with("dlq", "list", "--event-type", "order.[*"), 2, []string{"bad event type glob"}},
		{"bad aggregate", with("dlq", "list", "--aggregate", ":x"), 2, []string{"write TYPE or TYPE:ID"}},
		{"bad status", with("dlq", "list", "--status", "done"), 2, []string{`unknown replay status "done"`, "none, requested"}},
		{"id with filter", with("dlq", "replay", "--id", "1", "--route", "orders"), 2, []string{"--id conflicts with --route", "hint:"}},
		{"all with filter", with("dlq", "purge", "--all", "--route", "orders", "--yes"), 2, []string{"--all conflicts with --route"}},
		{"no selection", with("dlq", "replay"), 2, []string{"say which dead letters", "--all"}},
		{"purge no selection", with("dlq", "purge", "--yes"), 2, []string{"say which dead letters"}},
		{"dry run and wait", with("dlq", "replay", "--all", "--dry-run", "--wait"), 2, []string{"--dry-run and --wait conflict"}},
		{"timeout without wait", with("dlq", "replay", "--all", "--timeout", "1m"), 2, []string{"--timeout applies only with --wait"}},
		{"bad timeout", with("dlq", "replay", "--all", "--wait", "--timeout", "soon"), 2, []string{`--timeout: bad duration "soon"`}},
		{"purge needs yes", with("dlq", "purge", "--all"), 2, []string{"would delete 3 dead letters", "pass --yes", "nothing was deleted"}},
		{"prune bad duration", with("prune", "--older-than", "7days"), 2, []string{`--older-than: bad duration "7days"`, "7d"}},
		{"prune no duration", with("prune"), 2, []string{"--older-than is required"}},
		{"prune zero", with("prune", "--older-than", "0s"), 2, []string{"must be positive"}},
		{"prune negative", with("prune", "--older-than", "-1h"), 2, []string{"must not be negative"}},
		{"prune batch size", with("prune", "--older-than", "1h", "--batch-size", "0"), 2, []string{"--batch-size must be between"}},
		{"bad schema name", []string{"dlq", "list", "--database-url", o.DatabaseURL, "--schema", "Bad-Name"}, 2, []string{"lower-case letters"}},
		{"unmigrated schema", []string{"status", "--database-url", o.DatabaseURL, "--schema", "never_migrated_x"}, 1, []string{`schema "never_migrated_x" has no events table`, "outbox migrate up --schema never_migrated_x"}},
		{"missing config", []string{"dlq", "list", "--config", missingCfg}, 2, []string{"config file not found"}},
		{"config and url", []string{"status", "--config", missingCfg, "--database-url", o.DatabaseURL}, 2, []string{"--config and --database-url conflict"}},
		{"bad dsn", []string{"dlq", "list", "--database-url", "postgres://u:s3cret@127.0.0.1:notaport/x"}, 2, []string{"bad database URL", "hint:"}},
		{"unreachable database", []string{"status", "--database-url", "postgres://u:s3cret@127.0.0.1:1/x?connect_timeout=2"}, 1, []string{"connect to PostgreSQL at 127.0.0.1:1", "hint:"}},
		{"unknown flag", with("prune", "--older", "1h"), 2, []string{"unknown flag"}},
		{"extra argument", with("status", "now"), 2, []string{"unknown command"}},
	}
	before := tableSnapshot(t, o)
	for _, tc := range cases {
		res := run(t, nil, tc.args...)
		if res.code != tc.code {
			t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", tc.name, res.code, tc.code, res.stdout, res.stderr)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(res.stderr, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.name, w, res.stderr)
			}
		}
		if strings.Contains(res.stdout+res.stderr, "s3cret") {
			t.Errorf("%s: printed the password:\n%s%s", tc.name, res.stdout, res.stderr)
		}
		if after := tableSnapshot(t, o); after != before {
			t.Fatalf("%s changed the tables:\nbefore:\n%s\nafter:\n%s", tc.name, before, after)
		}
	}
}
