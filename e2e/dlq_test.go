package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/dlq"
	"github.com/outboxrelay/outbox/internal/testutil"
)

// poisonSetup is an outbox whose relay sends order.* events to a subject
// the stream takes and payment.* events to one no stream takes, so that
// payments are dead-lettered at once (a permanent error).
type poisonSetup struct {
	o       *testutil.Outbox
	cfgPath string
	stream  string
	prefix  string
	natsURL string
}

func newPoisonSetup(t *testing.T) *poisonSetup {
	t.Helper()
	p := &poisonSetup{
		o:       testutil.NewOutbox(t),
		stream:  strings.ToUpper(testutil.RandomName("DLQ_")),
		prefix:  testutil.RandomName("dlq"),
		natsURL: testutil.NATSURL(t),
	}
	p.cfgPath = filepath.Join(t.TempDir(), "relay.yaml")
	p.writeConfig(t, false)
	t.Cleanup(func() { deleteStream(t, p.stream) })
	return p
}

// writeConfig writes relay.yaml; fixed adds the payments subject to the
// stream. The duplicate window is JetStream's smallest (100ms), so that it
// would not hide an event sent twice.
func (p *poisonSetup) writeConfig(t *testing.T, fixed bool) {
	t.Helper()
	subjects := fmt.Sprintf("[%q]", p.prefix+".ok.>")
	if fixed {
		subjects = fmt.Sprintf("[%q, %q]", p.prefix+".ok.>", p.prefix+".bad.>")
	}
	cfg := natsSinkConfig(p.o, p.natsURL, p.stream, subjects) + fmt.Sprintf(`routes:
  - name: orders
    match: "order.*"
    sink: bus
    destination: "%s.ok.{{.EventType}}"
  - name: payments
    match: "payment.*"
    sink: bus
    destination: "%s.bad.{{.EventType}}"
    retry: {max_attempts: 3, initial_interval: 10ms, max_interval: 50ms}
`, p.prefix, p.prefix)
	if err := os.WriteFile(p.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// insert writes events by plain SQL and returns their ids.
func (p *poisonSetup) insert(t *testing.T, aggType, eventType string, n int) []string {
	t.Helper()
	rows, err := p.o.Pool.Query(context.Background(), `INSERT INTO `+p.o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload)
	  SELECT $1, $1 || '-' || i, $2, convert_to(json_build_object('n', i)::text, 'UTF8') FROM generate_series(1, $3) AS i RETURNING id::text`,
		aggType, eventType, n)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// waitDeadLetters waits until the table holds n rows.
func (p *poisonSetup) waitDeadLetters(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got int
	for time.Now().Before(deadline) {
		p.o.Pool.QueryRow(context.Background(), `SELECT count(*) FROM `+p.o.Schema+`.dead_letters`).Scan(&got)
		if got >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%d dead letters after %s, want %d", got, timeout, n)
}

// cli runs an operator command against the setup's config.
func (p *poisonSetup) cli(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, nil, append(args, "--config", p.cfgPath)...)
}

type deadLetterRow struct {
	id          int64
	eventID     string
	status      string
	count       int
	attempts    int
	replayedAt  *time.Time
	destination string
}

func (p *poisonSetup) rows(t *testing.T) []deadLetterRow {
	t.Helper()
	rs, err := p.o.Pool.Query(context.Background(), `SELECT id, event_id::text, replay_status, replay_count, attempts, replayed_at, destination
	  FROM `+p.o.Schema+`.dead_letters ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []deadLetterRow
	for rs.Next() {
		var r deadLetterRow
		if err := rs.Scan(&r.id, &r.eventID, &r.status, &r.count, &r.attempts, &r.replayedAt, &r.destination); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestDLQReplayEndToEnd: poison events reach the dead-letter table; a replay
// while the cause persists fails again and counts its attempts; once the
// cause is fixed (the subject added to the stream, the relay restarted), two
// operators replaying at once with --wait deliver each event exactly once
// more, with its event id, to the failed route only.
func TestDLQReplayEndToEnd(t *testing.T) {
	t.Parallel()
	p := newPoisonSetup(t)
	relay := startRelay(t, p.cfgPath)
	relay.waitLog("streaming started", 30*time.Second)

	orderIDs := p.insert(t, "order", "order.created", 2)
	payIDs := p.insert(t, "payment", "payment.captured", 3)
	p.waitDeadLetters(t, 3, 30*time.Second)
	waitDelivered(t, p.o, 30*time.Second)

	before := p.rows(t)
	for _, r := range before {
		if r.status != "none" || !slices.Contains(payIDs, r.eventID) || !strings.Contains(r.destination, ".bad.payment.captured") {
			t.Fatalf("dead letter %+v, want a payment in status none", r)
		}
	}
	res := p.cli(t, "dlq", "list", "--route", "payments")
	if res.code != 0 || strings.Count(res.stdout, "payment.captured") != 3 || !strings.Contains(res.stdout, "no stream takes this subject") {
		t.Fatalf("dlq list: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	// The cause persists: the replay fails again, attempts add up.
	res = p.cli(t, "dlq", "replay", "--route", "payments", "--wait", "--timeout", "60s")
	if res.code != 1 || strings.Count(res.stdout, "failed again") != 3 || !strings.Contains(res.stderr, "3 of 3 replays failed") {
		t.Fatalf("replay while broken: exit %d, want 1\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	for i, r := range p.rows(t) {
		if r.status != "failed" || r.attempts <= before[i].attempts || r.count != 0 {
			t.Errorf("after a failed replay: %+v (attempts before %d)", r, before[i].attempts)
		}
	}

	// Fix the cause: the stream takes the payments subject; restart the relay.
	if code := relay.stop(); code != 0 {
		t.Fatalf("relay exited %d", code)
	}
	p.writeConfig(t, true)
	relay = startRelay(t, p.cfgPath)
	relay.waitLog("streaming started", 30*time.Second)

	// Two operators replay the same rows at once.
	type replayOut struct {
		Requested  []dlq.Letter  `json:"requested"`
		InProgress []dlq.Letter  `json:"in_progress"`
		Outcomes   []dlq.Outcome `json:"outcomes"`
	}
	var outs [2]replayOut
	var results [2]result
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			results[i] = run(t, nil, "dlq", "replay", "--config", p.cfgPath, "--route", "payments", "--wait", "--timeout", "60s", "--json")
		})
	}
	wg.Wait()
	requested := map[int64]int{}
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("replay %d: exit %d\nstdout: %s\nstderr: %s", i, r.code, r.stdout, r.stderr)
		}
		if err := json.Unmarshal([]byte(r.stdout), &outs[i]); err != nil {
			t.Fatalf("replay %d: --json output does not parse: %v\n%s", i, err, r.stdout)
		}
		for _, l := range outs[i].Requested {
			requested[l.ID]++
		}
		if len(outs[i].Outcomes) != len(outs[i].Requested) {
			t.Errorf("replay %d: %d outcomes for %d requested", i, len(outs[i].Outcomes), len(outs[i].Requested))
		}
		for _, o := range outs[i].Outcomes {
			if o.ReplayStatus != dlq.StatusReplayed || o.ReplayCount != 1 {
				t.Errorf("replay %d: outcome %+v", i, o)
			}
		}
	}
	if len(requested) != 3 {
		t.Fatalf("%d rows requested by the two operators, want 3: %v", len(requested), requested)
	}
	for id, n := range requested {
		if n != 1 {
			t.Errorf("row %d requested by %d operators", id, n)
		}
	}
	for _, r := range p.rows(t) {
		if r.status != "replayed" || r.count != 1 || r.replayedAt == nil {
			t.Errorf("after the replay: %+v, want replayed with replay_count 1", r)
		}
	}

	// An independent consumer sees each payment once, with its event id, on
	// the payments route's subject, and the orders once (not again).
	msgs := readStream(t, p.stream, 5, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // anything sent twice would arrive meanwhile
	msgs = readStream(t, p.stream, 5, 30*time.Second)
	seen := map[string]int{}
	for _, m := range msgs {
		seen[m.id]++
		if slices.Contains(payIDs, m.id) && m.subject != p.prefix+".bad.payment.captured" {
			t.Errorf("payment %s arrived on %s", m.id, m.subject)
		}
	}
	for _, id := range append(slices.Clone(orderIDs), payIDs...) {
		if seen[id] != 1 {
			t.Errorf("event %s arrived %d times, want once", id, seen[id])
		}
	}
	if len(msgs) != 5 {
		t.Errorf("stream holds %d messages, want 5", len(msgs))
	}

	// The rows show the replay; replaying again needs --again.
	res = p.cli(t, "dlq", "show", fmt.Sprint(before[0].id))
	if res.code != 0 || !strings.Contains(res.stdout, "replayed (count 1") {
		t.Errorf("dlq show after the replay: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = p.cli(t, "dlq", "replay", "--route", "payments", "--wait")
	if res.code != 0 || !strings.Contains(res.stdout, "no dead letters to replay") || !strings.Contains(res.stdout, "pass --again") {
		t.Errorf("second replay: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if code := relay.stop(); code != 0 {
		t.Fatalf("relay exited %d", code)
	}
}

// TestDLQReplayWaitWithoutRelay: with no relay running, --wait gives up after
// its timeout, says why, and the request stays for the next relay.
func TestDLQReplayWaitWithoutRelay(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	insertDeadLetters(t, o, 2)
	res := run(t, nil, "dlq", "replay", "--all", "--wait", "--timeout", "1s", "--database-url", o.DatabaseURL, "--schema", o.Schema)
	if res.code != 1 || !strings.Contains(res.stderr, "2 replays not finished after 1s") || !strings.Contains(res.stderr, "no relay has picked them up") {
		t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	var n int
	o.Pool.QueryRow(context.Background(), `SELECT count(*) FROM `+o.Schema+`.dead_letters WHERE replay_status = 'requested'`).Scan(&n)
	if n != 2 {
		t.Errorf("%d rows requested, want 2", n)
	}
}

// insertDeadLetters inserts n dead letters with ids 1..n on route orders.
func insertDeadLetters(t *testing.T, o *testutil.Outbox, n int) {
	t.Helper()
	_, err := o.Pool.Exec(context.Background(), `INSERT INTO `+o.Schema+`.dead_letters
	  (id, event_id, aggregate_type, aggregate_id, event_type, schema_version, payload, content_type,
	   occurred_at, created_at, route, sink, destination, attempts, last_error, first_failed_at, last_failed_at)
	  OVERRIDING SYSTEM VALUE
	  SELECT i, gen_random_uuid(), 'order', 'o-' || i, 'order.created', '1.0', '{"n":1}', 'application/json',
	   now(), now(), 'orders', 'bus', 'orders.x', 1, 'boom', now(), now()
	  FROM generate_series(1, $1) AS i`, n)
	if err != nil {
		t.Fatal(err)
	}
}
