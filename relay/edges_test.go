package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/stdout"
)

// recorder is a sink that keeps a copy of every message it is asked to
// publish (attempts) and of those it accepted (delivered). While refuse is
// set it fails every message permanently, so the relay dead-letters them.
type recorder struct {
	mu        sync.Mutex
	attempts  []relay.Message
	delivered []relay.Message
	refuse    atomic.Bool
}

func (r *recorder) Publish(_ context.Context, msgs []*relay.Message) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		c := *m
		ev := *m.Event
		c.Event = &ev
		r.attempts = append(r.attempts, c)
		if !r.refuse.Load() {
			r.delivered = append(r.delivered, c)
		}
	}
	if r.refuse.Load() {
		return sink.AllFailed(len(msgs), sink.Permanentf("test: refused"))
	}
	return nil
}

func (r *recorder) Close() error { return nil }

// counts returns how many messages were attempted and delivered so far.
func (r *recorder) counts() (attempts, delivered int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.attempts), len(r.delivered)
}

// since returns copies of the messages from index from on.
func (r *recorder) since(delivered bool, from int) []relay.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.attempts
	if delivered {
		s = r.delivered
	}
	return append([]relay.Message(nil), s[from:]...)
}

// running is one relay over a test outbox, delivering to a recorder.
type running struct {
	r      *relay.Relay
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRecording starts a relay over o whose routes (YAML, sink "rec") deliver to rec.
func startRecording(t *testing.T, o *testutil.Outbox, dsn string, rec relay.Sink, routes string) *running {
	t.Helper()
	return startRecordingWith(t, o, dsn, rec, routes, nil)
}

// startRecordingWith is startRecording with the relay's metrics in reg (when set).
func startRecordingWith(t *testing.T, o *testutil.Outbox, dsn string, rec relay.Sink, routes string, reg prometheus.Registerer) *running {
	t.Helper()
	src := fmt.Sprintf("database: {url: '%s', schema: %s, slot: %s, publication: %s, standby_poll: 200ms, sample_interval: 100ms}\nsinks: [{name: rec, type: stdout}]\n%s",
		dsn, o.Schema, o.Slot, o.Publication, routes)
	cfg, err := relay.ParseConfig([]byte(src), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	r, err := relay.New(cfg, map[string]relay.Sink{"rec": rec}, &relay.Options{Logger: slog.New(slog.NewTextHandler(w, nil)), Registerer: reg, DrainTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &running{r: r, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { run.done <- r.Run(ctx) }()
	t.Cleanup(func() { run.stop(t) })
	return run
}

func (run *running) stop(t *testing.T) {
	t.Helper()
	if run.cancel == nil {
		return
	}
	run.cancel()
	run.cancel = nil
	select {
	case err := <-run.done:
		if err != nil {
			t.Errorf("relay.Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("relay did not stop within 30s")
	}
}

// waitFor polls cond until it holds, failing the test with what the relay
// reports when it does not within a minute.
func (run *running) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute; relay health %+v; log tail:\n%s", what, run.r.Health(context.Background()), tailLines(run.logs.String(), 15))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// edgeRow is a row with timestamps at the edges of PostgreSQL's range and of
// Go's time.Duration (~1708-2292), and the CloudEvents attribute its
// occurred_at travels in.
type edgeRow struct {
	occurred, created       string // PostgreSQL input
	occurredAt, createdAt   time.Time
	occurredInf, createdInf pgtype.InfinityModifier
	attr                    sink.Attribute
}

var (
	day1 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	inf  = pgtype.Infinity
	ninf = pgtype.NegativeInfinity
)

var edgeRows = []edgeRow{
	{"2026-03-01 12:00:00.123456+00", "2026-03-01 12:00:01+00", day1.Add(123456 * time.Microsecond), day1.Add(time.Second), 0, 0,
		sink.Attribute{Name: "time", Value: "2026-03-01T12:00:00.123456Z"}},
	{"0001-01-01 00:00:00+00", "2300-01-01 00:00:00+00", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), 0, 0,
		sink.Attribute{Name: "time", Value: "0001-01-01T00:00:00Z"}},
	{"4713-01-01 00:00:00+00 BC", "294276-12-31 23:59:59.999999+00", time.Date(-4712, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC), 0, 0,
		sink.Attribute{Name: "occurredat", Value: "-004712-01-01T00:00:00Z"}},
	{"10000-01-01 00:00:00+00", "1707-06-01 12:00:00.5+00", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1707, 6, 1, 12, 0, 0, 5e8, time.UTC), 0, 0,
		sink.Attribute{Name: "occurredat", Value: "+010000-01-01T00:00:00Z"}},
	{"infinity", "2026-03-01 12:00:00+00", time.Time{}, day1, inf, 0, sink.Attribute{Name: "occurredat", Value: "infinity"}},
	{"-infinity", "infinity", time.Time{}, time.Time{}, ninf, inf, sink.Attribute{Name: "occurredat", Value: "-infinity"}},
	{"2026-03-01 12:00:00+00", "-infinity", day1, time.Time{}, 0, ninf, sink.Attribute{Name: "time", Value: "2026-03-01T12:00:00Z"}},
}

const edgeHeaders = `{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "n": 5, "nested": {"a": [1, "x"]}, "é": "ü"}`

// eventText is everything an event carries that must be the same on every
// path, as text.
func eventText(ev *relay.Event) string {
	return fmt.Sprintf("id=%s type=%s key=%s version=%s payload=%q content=%s headers=%v tenant=%q occurred=%s %v created=%s %v",
		ev.ID, ev.EventType, ev.Key(), ev.SchemaVersion, ev.Payload, ev.ContentType, ev.Headers, ev.TenantID,
		ev.OccurredAt.Format(time.RFC3339Nano), ev.OccurredAtInf, ev.CreatedAt.Format(time.RFC3339Nano), ev.CreatedAtInf)
}

// TestEdgeTimestampsOnEveryPath sends the same rows, with timestamps of any
// year and ±infinity, through the stream, a new slot's snapshot, the
// dead-letter table and a replay: each path gives the values stored, and
// none stalls.
func TestEdgeTimestampsOnEveryPath(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	rec := &recorder{}
	routes := "routes:\n  - {name: r, match: '*', sink: rec, destination: x}\n"
	run := startRecording(t, o, o.DatabaseURL, rec, routes)
	run.waitFor(t, "streaming", func() bool { return run.r.Health(ctx).Streaming })

	ids := make([]uuid.UUID, len(edgeRows))
	want := map[uuid.UUID]edgeRow{}
	tx, err := o.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range edgeRows {
		ids[i] = uuid.Must(uuid.NewV7())
		want[ids[i]] = r
		if _, err := tx.Exec(ctx, `INSERT INTO `+o.Schema+`.events (id, aggregate_type, aggregate_id, event_type, payload, headers, occurred_at, created_at)
			VALUES ($1, 'edge', $2, 'edge.time', '\x7b7d', $3, $4::timestamptz, $5::timestamptz)`, ids[i], fmt.Sprint(i), edgeHeaders, r.occurred, r.created); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	n := len(edgeRows)

	check := func(path string, msgs []relay.Message) map[uuid.UUID]string {
		t.Helper()
		if len(msgs) != n {
			t.Fatalf("%s: %d messages, want %d", path, len(msgs), n)
		}
		out := map[uuid.UUID]string{}
		for _, m := range msgs {
			ev := m.Event
			w, ok := want[ev.ID]
			if !ok {
				t.Fatalf("%s: unexpected event %s", path, ev.ID)
			}
			out[ev.ID] = eventText(ev)
			if ev.OccurredAt != w.occurredAt || ev.CreatedAt != w.createdAt || ev.OccurredAtInf != w.occurredInf || ev.CreatedAtInf != w.createdInf {
				t.Errorf("%s: row (%s, %s) arrived as occurred_at %v %v, created_at %v %v", path, w.occurred, w.created,
					ev.OccurredAt, ev.OccurredAtInf, ev.CreatedAt, ev.CreatedAtInf)
			}
			// The message carries occurred_at in time when RFC 3339 can
			// hold it, else in occurredat; never both.
			attrs := map[string]string{}
			for _, a := range sink.CloudEvents(&m) {
				attrs[a.Name] = a.Value
			}
			other := map[string]string{"time": "occurredat", "occurredat": "time"}[w.attr.Name]
			if v, ok := attrs[w.attr.Name]; !ok || v != w.attr.Value || attrs[other] != "" {
				t.Errorf("%s: row (%s, ...): attributes %v, want %s=%q", path, w.occurred, attrs, w.attr.Name, w.attr.Value)
			}
			if _, err := json.Marshal(stdout.Encode(&m)); err != nil {
				t.Errorf("%s: the stdout sink cannot encode row (%s, %s): %v", path, w.occurred, w.created, err)
			}
		}
		return out
	}

	// 1. The stream.
	run.waitFor(t, "stream delivery", func() bool { _, d := rec.counts(); return d >= n })
	stream := check("stream", rec.since(true, 0))

	// 2. A new slot's snapshot, whose deliveries the sink refuses: every
	// row is dead-lettered, with its exact envelope.
	run.stop(t)
	testutil.DropSlot(t, o.Pool, o.Slot)
	if _, err := o.Pool.Exec(ctx, `UPDATE `+o.Schema+`.events SET delivered_at = NULL`); err != nil {
		t.Fatal(err)
	}
	rec.refuse.Store(true)
	attempted, delivered := rec.counts()
	run = startRecording(t, o, o.DatabaseURL, rec, routes)
	run.waitFor(t, "snapshot dead-lettered", func() bool {
		var dead int
		o.Pool.QueryRow(ctx, `SELECT count(*) FROM `+o.Schema+`.dead_letters`).Scan(&dead)
		return dead == n
	})
	snapshot := check("snapshot", rec.since(false, attempted))
	var same int
	if err := o.Pool.QueryRow(ctx, `SELECT count(*) FROM `+o.Schema+`.events e JOIN `+o.Schema+`.dead_letters d ON d.event_id = e.id
		WHERE d.occurred_at = e.occurred_at AND d.created_at = e.created_at AND d.headers = e.headers AND d.payload = e.payload`).Scan(&same); err != nil {
		t.Fatal(err)
	}
	if same != n {
		t.Errorf("%d of %d dead letters copy the row's timestamps, headers and payload exactly", same, n)
	}

	// 3. A replay of the dead letters.
	rec.refuse.Store(false)
	if _, err := o.Pool.Exec(ctx, `UPDATE `+o.Schema+`.dead_letters SET replay_status = 'requested'`); err != nil {
		t.Fatal(err)
	}
	run.waitFor(t, "replay delivery", func() bool { _, d := rec.counts(); return d >= delivered+n })
	replay := check("replay", rec.since(true, delivered))

	for _, id := range ids {
		if stream[id] != snapshot[id] || stream[id] != replay[id] {
			t.Errorf("row %s differs between paths:\n  stream   %s\n  snapshot %s\n  replay   %s", id, stream[id], snapshot[id], replay[id])
		}
	}
}

// perKeyInversions counts, per ordering key, the messages that arrive after
// a message of the same key with a higher n (the payload {"n": N}).
func perKeyInversions(msgs []relay.Message) (int, map[string][]int) {
	seq := map[string][]int{}
	inv := 0
	for _, m := range msgs {
		var n int
		fmt.Sscanf(string(m.Event.Payload), `{"n": %d}`, &n)
		k := m.Event.Key()
		if s := seq[k]; len(s) > 0 && s[len(s)-1] > n {
			inv++
		}
		seq[k] = append(seq[k], n)
	}
	return inv, seq
}

// TestReplayKeepsOrderPerKey replays 200 dead letters of 5 keys whose rows
// PostgreSQL stores out of id order: each key's events arrive in the order
// they were dead-lettered.
func TestReplayKeepsOrderPerKey(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	const total, keys = 200, 5
	for i := range total {
		if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.dead_letters (event_id, aggregate_type, aggregate_id, event_type,
			schema_version, payload, content_type, occurred_at, created_at, route, sink, destination, attempts, last_error,
			first_failed_at, last_failed_at) VALUES ($1, 'k', $2, 'e', '1.0', $3, 'application/json', now(), now(), 'r', 'rec', 'x', 1, 'boom', now(), now())`,
			uuid.Must(uuid.NewV7()), fmt.Sprint(i%keys), fmt.Appendf(nil, `{"n": %d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	// Updated rows get new versions in the order of the updates: the
	// table's physical order is no longer the id order.
	var ids []int64
	rows, _ := o.Pool.Query(ctx, `SELECT id FROM `+o.Schema+`.dead_letters ORDER BY md5(id::text)`)
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		ids = append(ids, id)
	}
	if rows.Err() != nil || len(ids) != total {
		t.Fatalf("read ids: %v (%d)", rows.Err(), len(ids))
	}
	for _, id := range ids {
		if _, err := o.Pool.Exec(ctx, `UPDATE `+o.Schema+`.dead_letters SET replay_status = 'requested', replay_requested_at = now() WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	run := startRecording(t, o, o.DatabaseURL, rec, "routes:\n  - {name: r, match: '*', sink: rec, destination: x}\n")
	run.waitFor(t, "replays", func() bool { _, d := rec.counts(); return d >= total })
	msgs := rec.since(true, 0)
	if len(msgs) != total {
		t.Fatalf("%d messages, want %d", len(msgs), total)
	}
	if inv, seq := perKeyInversions(msgs); inv > 0 {
		t.Errorf("%d per-key inversions in the replay; order per key: %v", inv, seq)
	}
}

// TestSnapshotKeepsInsertionOrder inserts 780 rows by plain SQL in one
// transaction, with the database's own ids (UUIDv7, not monotonic within a
// millisecond), before the relay's first start: the snapshot delivers each
// key's rows in insertion order, as the stream would.
func TestSnapshotKeepsInsertionOrder(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	const total, keys = 780, 3
	if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'k', (g % `+fmt.Sprint(keys)+`)::text, 'e', convert_to(format('{"n": %s}', g), 'UTF8') FROM generate_series(0, `+fmt.Sprint(total-1)+`) g`); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	run := startRecording(t, o, o.DatabaseURL, rec, "routes:\n  - {name: r, match: '*', sink: rec, destination: x}\n")
	run.waitFor(t, "snapshot", func() bool { _, d := rec.counts(); return d >= total })
	msgs := rec.since(true, 0)
	if len(msgs) != total {
		t.Fatalf("%d messages, want %d", len(msgs), total)
	}
	if msgs[0].Event.CommitLSN != 0 {
		t.Fatal("the rows came from the stream, not from the snapshot")
	}
	if inv, _ := perKeyInversions(msgs); inv > 0 {
		t.Errorf("%d per-key inversions in %d rows delivered from the snapshot", inv, total)
	}
}

// relayRole creates a role with the relay's grants (docs/security.md), runs
// the statements setup ({role} stands for the role's name) and returns the
// role's DSN and name.
func relayRole(t *testing.T, o *testutil.Outbox, setup ...string) (dsn, role string) {
	t.Helper()
	ctx := context.Background()
	s := o.Schema
	role = "relay_" + strings.TrimPrefix(s, "t_")
	t.Cleanup(func() {
		testutil.DropSlot(t, o.Pool, o.Slot) // the slot goes before its role
		o.Pool.Exec(context.Background(), "DROP OWNED BY "+role)
		o.Pool.Exec(context.Background(), "DROP ROLE "+role)
	})
	for _, q := range append([]string{
		"CREATE ROLE " + role + " LOGIN REPLICATION",
		"GRANT USAGE ON SCHEMA " + s + " TO " + role,
		"GRANT SELECT, UPDATE, DELETE ON " + s + ".events TO " + role,
		"GRANT SELECT, INSERT, UPDATE ON " + s + ".dead_letters TO " + role,
		"GRANT SELECT, INSERT, UPDATE ON " + s + ".relay_state TO " + role,
	}, setup...) {
		q = strings.ReplaceAll(q, "{role}", role)
		if _, err := o.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	u, err := url.Parse(o.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return u.String(), role
}

// TestSnapshotPendingReadFailureDoesNotResume: a relay stopped before it
// delivered its new slot's snapshot (relay_state.snapshot_pending). When
// the next relay cannot read that flag, it must not resume the slot (which
// would skip the snapshot's rows for good): it reports the error and tries
// again, and once the flag reads, it takes a new snapshot.
func TestSnapshotPendingReadFailureDoesNotResume(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	s := o.Schema
	dsn, _ := relayRole(t, o,
		// The fault: the statement that reads snapshot_pending fails.
		`CREATE FUNCTION `+s+`.fail_snapshot_pending_read() RETURNS boolean LANGUAGE plpgsql AS $$
		BEGIN
			IF current_query() LIKE '%snapshot_pending FROM%' THEN
				RAISE EXCEPTION 'test: reading snapshot_pending fails';
			END IF;
			RETURN true;
		END $$`,
		"CREATE POLICY fault ON "+s+".relay_state TO {role} USING ("+s+".fail_snapshot_pending_read()) WITH CHECK (true)",
		"ALTER TABLE "+s+".relay_state ENABLE ROW LEVEL SECURITY",
		// A relay created the slot and stopped before delivering its
		// snapshot: the row written before the slot is only in the snapshot.
		"INSERT INTO "+s+".events (aggregate_type, aggregate_id, event_type, payload) VALUES ('k', '1', 'before.slot', '\\x7b7d')",
		"SELECT pg_create_logical_replication_slot('"+o.Slot+"', 'pgoutput')",
		"INSERT INTO "+s+".relay_state (slot, snapshot_pending) VALUES ('"+o.Slot+"', true)",
		"INSERT INTO "+s+".events (aggregate_type, aggregate_id, event_type, payload) VALUES ('k', '1', 'after.slot', '\\x7b7d')",
	)
	rec := &recorder{}
	run := startRecording(t, o, dsn, rec, "routes:\n  - {name: r, match: '*', sink: rec, destination: x}\n")
	run.waitFor(t, "an error or a delivery", func() bool {
		_, d := rec.counts()
		return d > 0 || run.r.Health(ctx).Error != ""
	})
	if _, d := rec.counts(); d > 0 {
		t.Fatalf("the relay resumed the slot and delivered %v although it could not tell whether the slot's snapshot was delivered; log:\n%s",
			rec.since(true, 0)[0].Event.EventType, tailLines(run.logs.String(), 10))
	}
	if h := run.r.Health(ctx); !strings.Contains(h.Error, "snapshot_pending") {
		t.Errorf("health error %q does not say what failed", h.Error)
	}
	// Repaired: the next session takes a new snapshot, with both rows.
	if _, err := o.Pool.Exec(ctx, "ALTER TABLE "+o.Schema+".relay_state DISABLE ROW LEVEL SECURITY"); err != nil {
		t.Fatal(err)
	}
	run.waitFor(t, "both rows", func() bool { _, d := rec.counts(); return d >= 2 })
	got := map[string]bool{}
	for _, m := range rec.since(true, 0) {
		got[m.Event.EventType] = true
	}
	if !got["before.slot"] || !got["after.slot"] {
		t.Errorf("delivered %v, want before.slot and after.slot", got)
	}
}

// TestUndecodableRowIsDeadLettered: a row whose headers are not a JSON
// object of strings is dead-lettered on its route with the reason, on the
// stream and on the snapshot path, and the rows after it (same key
// included) are delivered.
func TestUndecodableRowIsDeadLettered(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	insert := func(tag string) {
		t.Helper()
		for i, h := range []string{`{"a": "b"}`, `[1, 2]`, `{"c": "d"}`} {
			if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload, headers)
				VALUES ('k', '1', $1, '\x7b7d', $2)`, fmt.Sprintf("%s.%d", tag, i), h); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert("snapshot") // before the relay's first start
	rec := &recorder{}
	run := startRecording(t, o, o.DatabaseURL, rec, "routes:\n  - {name: r, match: '*', sink: rec, destination: x}\n")
	run.waitFor(t, "streaming", func() bool { return run.r.Health(ctx).Streaming })
	insert("stream")
	run.waitFor(t, "the good rows", func() bool { _, d := rec.counts(); return d >= 4 })
	var got []string
	for _, m := range rec.since(true, 0) {
		got = append(got, m.Event.EventType)
	}
	if strings.Join(got, ",") != "snapshot.0,snapshot.2,stream.0,stream.2" {
		t.Errorf("delivered %v, want the good rows in order", got)
	}
	run.waitFor(t, "two dead letters", func() bool {
		var n int
		o.Pool.QueryRow(ctx, `SELECT count(*) FROM `+o.Schema+`.dead_letters`).Scan(&n)
		return n == 2
	})
	rows, err := o.Pool.Query(ctx, `SELECT event_type, route, last_error, headers::text FROM `+o.Schema+`.dead_letters ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var typ, route, last, headers string
		if err := rows.Scan(&typ, &route, &last, &headers); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(typ, ".1") || route != "r" || !strings.Contains(last, "headers: a JSON array, want an object of strings") || headers != "[1, 2]" {
			t.Errorf("dead letter %s on %s: error %q, headers %s", typ, route, last, headers)
		}
	}
	if h := run.r.Health(ctx); !h.Streaming || h.Error != "" {
		t.Errorf("relay health after the undecodable rows: %+v", h)
	}
}

// TestFailingSnapshotSaysWhy: a relay whose new slot's snapshot cannot be
// read tries again, saying in its health and log what fails, and delivers
// once the cause is fixed.
func TestFailingSnapshotSaysWhy(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	dsn, role := relayRole(t, o,
		"INSERT INTO "+o.Schema+".events (aggregate_type, aggregate_id, event_type, payload) VALUES ('k', '1', 'e', '\\x7b7d')",
		"REVOKE SELECT ON "+o.Schema+".events FROM {role}")
	rec := &recorder{}
	run := startRecording(t, o, dsn, rec, "routes:\n  - {name: r, match: '*', sink: rec, destination: x}\n")
	run.waitFor(t, "the snapshot to fail", func() bool { return run.r.Health(ctx).Error != "" })
	want := "snapshot of slot " + o.Slot + ": read the undelivered rows: ERROR: permission denied for table events"
	if h := run.r.Health(ctx); !strings.Contains(h.Error, want) {
		t.Errorf("health error %q, want it to contain %q", h.Error, want)
	}
	run.waitFor(t, "the failure in the log", func() bool { return strings.Contains(run.logs.String(), want) })
	if _, err := o.Pool.Exec(ctx, "GRANT SELECT ON "+o.Schema+".events TO "+role); err != nil {
		t.Fatal(err)
	}
	run.waitFor(t, "the row", func() bool { _, d := rec.counts(); return d >= 1 })
}

// stuck fails every message of event type "stuck" with a retryable error.
type stuck struct{ recorder }

func (s *stuck) Publish(ctx context.Context, msgs []*relay.Message) []error {
	errs := make([]error, len(msgs))
	var pass []*relay.Message
	for i, m := range msgs {
		if m.Event.EventType == "stuck" {
			errs[i] = fmt.Errorf("test: broker down")
		} else {
			pass = append(pass, m)
		}
	}
	s.recorder.Publish(ctx, pass)
	return errs
}

// TestBacklogMetricsWithEdgeTimestamps: undelivered rows whose created_at
// is ±infinity or centuries ago are counted in the backlog (the age query
// used to fail on them, and the metrics froze), and the age is capped (285
// years) instead of overflowing.
func TestBacklogMetricsWithEdgeTimestamps(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	for _, c := range []string{"-infinity", "infinity", "0001-01-01 00:00:00+00"} {
		if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload, created_at)
			VALUES ('k', $1, 'stuck', '\x7b7d', $2::timestamptz)`, c, c); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	run := startRecordingWith(t, o, o.DatabaseURL, &stuck{}, "routes:\n  - {name: r, match: '*', sink: rec, destination: x, retry: {max_attempts: 1000000}}\n", reg)
	run.waitFor(t, "the backlog metric", func() bool {
		body := scrape(t, reg)
		return metricValue(body, "outbox_backlog_events") == 3 && metricValue(body, "outbox_backlog_oldest_age_seconds") > 200*365*86400
	})
}

// TestRelayNeedsMigrations: on a schema without events.seq (migration 2) or
// dead_letters.event_seq (migration 3) the relay refuses to start, saying to
// migrate, rather than failing every snapshot or every dead-letter write
// (which would hold the key and the slot).
func TestRelayNeedsMigrations(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ table, column string }{{"events", "seq"}, {"dead_letters", "event_seq"}} {
		t.Run(c.table+"."+c.column, func(t *testing.T) {
			t.Parallel()
			o := testutil.NewOutbox(t)
			if _, err := o.Pool.Exec(context.Background(), "ALTER TABLE "+o.Schema+"."+c.table+" DROP COLUMN "+c.column); err != nil {
				t.Fatal(err)
			}
			run := startRecording(t, o, o.DatabaseURL, &recorder{}, "routes:\n  - {name: r, match: '*', sink: rec, destination: x}\n")
			select {
			case err := <-run.done:
				run.cancel = nil
				if !errors.Is(err, relay.ErrNotMigrated) || !strings.Contains(err.Error(), "outbox migrate up") {
					t.Errorf("relay.Run: %v, want ErrNotMigrated with the command to run", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the relay did not stop")
			}
		})
	}
}
