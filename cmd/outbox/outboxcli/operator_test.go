package outboxcli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/dlq"
	"github.com/outboxrelay/outbox/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// fixedNow is the clock of every command in these tests.
var fixedNow = time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	flag.Parse()
	nowFunc = func() time.Time { return fixedNow }
	os.Exit(m.Run())
}

// fixture is an outbox with fixed dead letters, events and relay state.
type fixture struct {
	o *testutil.Outbox
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	_, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.dead_letters
	  (id, event_id, aggregate_type, aggregate_id, event_type, schema_version, payload, content_type, headers, tenant_id,
	   occurred_at, created_at, route, sink, destination, attempts, last_error, errors, first_failed_at, last_failed_at,
	   replay_status, replay_requested_at, replayed_at, replay_count)
	  OVERRIDING SYSTEM VALUE VALUES
	  (1, '0190aaaa-0000-7000-8000-000000000001', 'order', 'o-1', 'order.created', '1.0', '{"order_id":"o-1","total":120,"lines":[{"sku":"A-1","qty":2}]}',
	   'application/json', '{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","x-user":"alice"}', 'acme',
	   '2026-03-01T11:59:58Z', '2026-03-01T11:59:59Z', 'orders', 'bus', 'shop.orders.order.created', 10,
	   'nats: publish: no stream takes this subject (add it to the stream''s subjects): nats: no responders available for request',
	   '["2026-03-01T12:00:00.1Z nats: publish: timeout", "2026-03-01T12:00:01.2Z nats: publish: no stream takes this subject"]',
	   '2026-03-01T12:00:00Z', '2026-03-01T12:00:01Z', 'none', NULL, NULL, 0),
	  (2, '0190aaaa-0000-7000-8000-000000000002', 'order', 'o-2', 'order.paid', '1.0', '{"order_id":"o-2"}',
	   'application/json', '{}', NULL, '2026-03-01T12:01:00Z', '2026-03-01T12:01:00Z', 'orders', 'bus', 'shop.orders.order.paid', 3,
	   'nats: publish: no acknowledgement in time', '[]', '2026-03-01T12:01:00Z', '2026-03-01T12:02:00Z', 'failed', '2026-03-01T12:30:00Z', NULL, 0),
	  (3, '0190aaaa-0000-7000-8000-000000000003', 'payment', 'p-1', 'payment.failed', '2.1', decode('0a04702d3112036575721a0100ff', 'hex'),
	   'application/protobuf', '{}', NULL, '2026-03-01T12:03:00Z', '2026-03-01T12:03:00Z', 'payments', 'kafka', 'payments', 1,
	   'kafka: message too large', '["2026-03-01T12:04:00Z kafka: message too large"]', '2026-03-01T12:04:00Z', '2026-03-01T12:04:00Z',
	   'replayed', '2026-03-01T12:40:00Z', '2026-03-01T12:40:01Z', 1),
	  (4, '0190aaaa-0000-7000-8000-000000000004', 'order', 'o-3', 'order.created', '1.0', '{"order_id":"o-3"}',
	   'application/json', '{}', NULL, '2026-03-01T12:05:00Z', '2026-03-01T12:05:00Z', 'orders', 'bus', 'shop.orders.order.created', 10,
	   'nats: publish: no stream takes this subject', '[]', '2026-03-01T12:05:00Z', '2026-03-01T12:06:00Z', 'requested', '2026-03-01T12:50:00Z', NULL, 0),
	  (5, '0190aaaa-0000-7000-8000-000000000004', 'order', 'o-3', 'order.created', '1.0', '{"order_id":"o-3"}',
	   'application/json', '{}', NULL, '2026-03-01T12:05:00Z', '2026-03-01T12:05:00Z', 'audit', 'bus', 'audit.order', 10,
	   'nats: publish: no stream takes this subject', '[]', '2026-03-01T12:05:00Z', '2026-03-01T12:07:00Z', 'none', NULL, NULL, 0)`)
	if err != nil {
		t.Fatalf("insert dead letters: %v", err)
	}
	// Events: 3 old delivered, 2 recent delivered, 2 undelivered.
	_, err = o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload, created_at, delivered_at) VALUES
	  ('order', 'o-10', 'order.created', '{}', '2026-03-01T10:00:00Z', '2026-03-01T10:00:01Z'),
	  ('order', 'o-11', 'order.created', '{}', '2026-03-01T10:00:00Z', '2026-03-01T10:00:01Z'),
	  ('order', 'o-12', 'order.created', '{}', '2026-03-01T10:00:00Z', '2026-03-01T10:00:01Z'),
	  ('order', 'o-13', 'order.created', '{}', '2026-03-01T12:30:00Z', '2026-03-01T12:30:01Z'),
	  ('order', 'o-14', 'order.created', '{}', '2026-03-01T12:30:00Z', '2026-03-01T12:30:01Z'),
	  ('order', 'o-15', 'order.created', '{}', '2026-03-01T11:00:00Z', NULL),
	  ('order', 'o-16', 'order.created', '{}', '2026-03-01T12:55:00Z', NULL)`)
	if err != nil {
		t.Fatalf("insert events: %v", err)
	}
	_, err = o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.relay_state (slot, snapshot_pending, holder, holder_since)
	  VALUES ($1, false, 'relay-0 pid 4242 (v1.2.3)', '2026-03-01T08:00:00Z')`, o.Slot)
	if err != nil {
		t.Fatalf("insert relay state: %v", err)
	}
	return &fixture{o: o}
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the command line in-process against the fixture's outbox.
func (f *fixture) run(t *testing.T, args ...string) result {
	t.Helper()
	args = append(args, "--database-url", f.o.DatabaseURL, "--schema", f.o.Schema)
	if args[0] == "status" {
		args = append(args, "--slot", f.o.Slot)
	}
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(""), &out, &errb)
	return result{code: code, stdout: f.normalize(out.String()), stderr: f.normalize(errb.String())}
}

func (f *fixture) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	res := f.run(t, args...)
	if res.code != 0 {
		t.Fatalf("outbox %s: exit %d\nstderr: %s", strings.Join(args, " "), res.code, res.stderr)
	}
	return res.stdout
}

// normalize replaces the test's random schema name.
func (f *fixture) normalize(s string) string {
	return strings.ReplaceAll(s, f.o.Schema, "SCHEMA")
}

// golden compares got with testdata/golden/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `go test ./cmd/outbox/outboxcli -run %s -update` to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (rerun with -update if the change is intended)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

func TestGoldenTables(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cases := []struct {
		file string
		args []string
	}{
		{"dlq_list.txt", []string{"dlq", "list"}},
		{"dlq_list_filtered.txt", []string{"dlq", "list", "--route", "orders", "--event-type", "order.*", "--limit", "2"}},
		{"dlq_list_since.txt", []string{"dlq", "list", "--since", "2026-03-01T12:04:00Z", "--until", "10m"}},
		{"dlq_list_aggregate.txt", []string{"dlq", "list", "--aggregate", "order:o-3"}},
		{"dlq_list_empty.txt", []string{"dlq", "list", "--route", "nope"}},
		{"dlq_show.txt", []string{"dlq", "show", "1"}},
		{"dlq_show_binary.txt", []string{"dlq", "show", "3"}},
		{"dlq_replay_dry_run.txt", []string{"dlq", "replay", "--all", "--dry-run"}},
		{"dlq_purge_dry_run.txt", []string{"dlq", "purge", "--route", "orders", "--dry-run"}},
		{"status.txt", []string{"status"}},
		{"prune_dry_run.txt", []string{"prune", "--older-than", "1h", "--dry-run"}},
	}
	for _, tc := range cases {
		golden(t, tc.file, f.mustRun(t, tc.args...))
	}
}

func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
	if dec.More() {
		t.Fatalf("more than one JSON value:\n%s", s)
	}
	return v
}

func TestJSONOutputsParse(t *testing.T) {
	t.Parallel()
	f := newFixture(t)

	list := decodeJSON[[]dlq.Letter](t, f.mustRun(t, "dlq", "list", "--json"))
	if len(list) != 5 || list[0].ID != 1 || list[0].TenantID != "acme" || list[2].ReplayStatus != dlq.StatusReplayed {
		t.Errorf("dlq list --json: %+v", list)
	}
	if empty := f.mustRun(t, "dlq", "list", "--route", "nope", "--json"); strings.TrimSpace(empty) != "[]" {
		t.Errorf("empty list: %q", empty)
	}

	type shown struct {
		dlq.Letter
		Errors        []string        `json:"errors"`
		Payload       json.RawMessage `json:"payload"`
		PayloadBase64 []byte          `json:"payload_base64"`
	}
	s1 := decodeJSON[shown](t, f.mustRun(t, "dlq", "show", "1", "--json"))
	var payload map[string]any
	if err := json.Unmarshal(s1.Payload, &payload); err != nil || payload["order_id"] != "o-1" || len(s1.Errors) != 2 || s1.Headers["x-user"] != "alice" {
		t.Errorf("dlq show --json: %+v (payload %v)", s1, err)
	}
	s3 := decodeJSON[shown](t, f.mustRun(t, "dlq", "show", "3", "--json"))
	if s3.Payload != nil || !bytes.Equal(s3.PayloadBase64, []byte{0x0a, 0x04, 0x70, 0x2d, 0x31, 0x12, 0x03, 0x65, 0x75, 0x72, 0x1a, 0x01, 0x00, 0xff}) {
		t.Errorf("dlq show 3 --json: binary payload %q / %q", s3.Payload, s3.PayloadBase64)
	}

	type replayOut struct {
		dlq.ReplayResult
		Outcomes []dlq.Outcome `json:"outcomes"`
		Pending  []dlq.Letter  `json:"pending"`
	}
	dry := decodeJSON[replayOut](t, f.mustRun(t, "dlq", "replay", "--all", "--dry-run", "--json"))
	if !dry.DryRun || !slices.Equal(letterIDs(dry.Requested), []int64{1, 2, 5}) || !slices.Equal(letterIDs(dry.InProgress), []int64{4}) || !slices.Equal(letterIDs(dry.Replayed), []int64{3}) {
		t.Errorf("dlq replay --dry-run --json: %+v", dry)
	}
	rep := decodeJSON[replayOut](t, f.mustRun(t, "dlq", "replay", "--id", "1,2", "--json"))
	if rep.DryRun || !slices.Equal(letterIDs(rep.Requested), []int64{1, 2}) || rep.Requested[0].ReplayStatus != dlq.StatusRequested {
		t.Errorf("dlq replay --json: %+v", rep)
	}

	pdry := decodeJSON[dlq.PurgeResult](t, f.mustRun(t, "dlq", "purge", "--route", "orders", "--dry-run", "--json"))
	if !pdry.DryRun || !slices.Equal(letterIDs(pdry.Deleted), []int64{}) || !slices.Equal(letterIDs(pdry.Skipped), []int64{1, 2, 4}) {
		t.Errorf("dlq purge --dry-run --json: %+v", pdry)
	}
	purged := decodeJSON[dlq.PurgeResult](t, f.mustRun(t, "dlq", "purge", "--id", "3", "--json"))
	if purged.DryRun || !slices.Equal(letterIDs(purged.Deleted), []int64{3}) {
		t.Errorf("dlq purge --json: %+v", purged)
	}

	st := decodeJSON[statusReport](t, f.mustRun(t, "status", "--json"))
	if st.Backlog.Undelivered != 2 || st.Backlog.OldestAgeSeconds == nil || *st.Backlog.OldestAgeSeconds != 7200 ||
		st.Slot.Exists || st.Relay.Active || st.Relay.Holder != "relay-0 pid 4242 (v1.2.3)" ||
		st.DeadLetters.Total != 4 || st.DeadLetters.ByStatus["requested"] != 3 || len(st.DeadLetters.ByRoute) != 2 {
		t.Errorf("status --json: %+v", st)
	}

	type pruneOut struct {
		Deleted          int64     `json:"deleted"`
		Batches          int       `json:"batches"`
		Before           time.Time `json:"before"`
		DryRun           bool      `json:"dry_run"`
		OlderThanSeconds float64   `json:"older_than_seconds"`
		MaxBatchSeconds  float64   `json:"max_batch_seconds"`
	}
	pr := decodeJSON[pruneOut](t, f.mustRun(t, "prune", "--older-than", "1h", "--batch-size", "2", "--json"))
	if pr.Deleted != 3 || pr.Batches != 2 || !pr.Before.Equal(fixedNow.Add(-time.Hour)) || pr.OlderThanSeconds != 3600 || pr.DryRun {
		t.Errorf("prune --json: %+v", pr)
	}
	var left int
	f.o.Pool.QueryRow(context.Background(), `SELECT count(*) FROM `+f.o.Schema+`.events`).Scan(&left)
	if left != 4 {
		t.Errorf("prune left %d events, want 4 (2 recent delivered, 2 undelivered)", left)
	}
}

// TestStatusWithSlot checks the slot part of the status against a real slot.
func TestStatusWithSlot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.o.Pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, f.o.Slot); err != nil {
		t.Fatal(err)
	}
	// Some WAL after the slot's position.
	if _, err := f.o.Pool.Exec(ctx, `INSERT INTO `+f.o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload)
	  SELECT 'order', 'o-' || i, 'order.created', '{}' FROM generate_series(1, 100) AS i`); err != nil {
		t.Fatal(err)
	}
	st := decodeJSON[statusReport](t, f.mustRun(t, "status", "--json"))
	if !st.Slot.Exists || st.Slot.Active || st.Slot.ActivePID != nil || st.Slot.LagBytes == nil || *st.Slot.LagBytes <= 0 || st.Slot.ConfirmedFlushLSN == "" {
		t.Errorf("slot: %+v", st.Slot)
	}
	out := f.mustRun(t, "status")
	for _, want := range []string{"SCHEMA_slot, inactive", "slot lag", "bytes) behind the server", "active relay  none (the last was relay-0 pid 4242 (v1.2.3)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	good := map[string]time.Duration{"168h": 168 * time.Hour, "7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "2w": 14 * 24 * time.Hour,
		"90m": 90 * time.Minute, "1w2d3h": (9*24 + 3) * time.Hour, "0s": 0}
	for s, want := range good {
		if got, err := parseDuration("--x", s); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "7", "d", "7days", "1h7d", "-1h", "seven", "99999999d"} {
		if _, err := parseDuration("--x", s); err == nil {
			t.Errorf("parseDuration(%q) accepted", s)
		}
	}
	now := fixedNow
	for s, want := range map[string]time.Time{
		"2026-02-01T10:00:00Z":      time.Date(2026, 2, 1, 10, 0, 0, 0, time.UTC),
		"2026-02-01T10:00:00+02:00": time.Date(2026, 2, 1, 8, 0, 0, 0, time.UTC),
		"2026-02-01":                time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC),
		"2026-02-01T10:00:00":       time.Date(2026, 2, 1, 10, 0, 0, 0, time.UTC),
		"2h":                        now.Add(-2 * time.Hour),
		"1d":                        now.Add(-24 * time.Hour),
	} {
		if got, err := parseTime("--since", s, now); err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := parseTime("--since", "yesterday", now); err == nil {
		t.Error("parseTime(yesterday) accepted")
	}
}

func TestFormatting(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{42 * time.Second: "42s", 192 * time.Second: "3m12s", 5*time.Hour + 3*time.Minute: "5h3m",
		76 * time.Hour: "3d4h", 0: "0s"} {
		if got := fmtAge(d); got != want {
			t.Errorf("fmtAge(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := fmtBytes(n); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", n, got, want)
		}
	}
	if got := truncate("a\nb  c"+strings.Repeat("x", 100), 10); got != "a b cxx..." {
		t.Errorf("truncate: %q", got)
	}
}

// TestStatusWithEdgeTimestamps: undelivered rows created at ±infinity and in
// the year 0001 must not break status (it failed scanning -infinity, and its
// --json failed on years outside 0000-9999).
func TestStatusWithEdgeTimestamps(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.o.Pool.Exec(ctx, `INSERT INTO `+f.o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload, created_at)
	  VALUES ('e', '1', 'edge.x', '{}', '-infinity'), ('e', '2', 'edge.x', '{}', 'infinity'), ('e', '3', 'edge.x', '{}', '0001-01-01 00:00:00+00')`); err != nil {
		t.Fatal(err)
	}
	st := decodeJSON[statusReport](t, f.mustRun(t, "status", "--json"))
	b := st.Backlog
	if b.OldestCreatedAt == nil || b.OldestCreatedAt.String() != "0001-01-01T00:00:00Z" || b.OldestAgeSeconds == nil || *b.OldestAgeSeconds < 60e9 {
		t.Errorf("backlog: oldest %v, age %v; want the finite 0001-01-01 and an age of about 2000 years", b.OldestCreatedAt, b.OldestAgeSeconds)
	}
	if out := f.mustRun(t, "status"); !strings.Contains(out, "created 0001-01-01T00:00:00Z") {
		t.Errorf("status lacks the oldest created time:\n%s", out)
	}
}
