package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/sdk"
)

// workload is what concurrent business transactions wrote.
type workload struct {
	mu         sync.Mutex
	committed  map[string]bool
	rolledBack map[string]bool
	perKey     map[string][]string // committed ids per ordering key, in commit order
}

func (w *workload) total() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.committed)
}

// writeWorkload runs writers concurrent business transactions until target
// events are committed. Each transaction inserts an order row and 1-3 outbox
// events through the SDK; about one in ten is rolled back. Each writer owns its
// keys, so the commit order per key is the order the writer committed in.
func writeWorkload(t *testing.T, o *testutil.Outbox, writers, target int) *workload {
	t.Helper()
	return writeWorkloadTagged(t, o, writers, target, "w")
}

// writeWorkloadTagged is writeWorkload with its order ids and keys prefixed by
// tag, so that several workloads can write to one outbox.
func writeWorkloadTagged(t *testing.T, o *testutil.Outbox, writers, target int, tag string) *workload {
	t.Helper()
	ctx := context.Background()
	if _, err := o.Pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+o.Schema+".orders (id text PRIMARY KEY, total int)"); err != nil {
		t.Fatal(err)
	}
	sw, err := sdk.New(&sdk.Config{Schema: o.Schema})
	if err != nil {
		t.Fatal(err)
	}
	w := &workload{committed: map[string]bool{}, rolledBack: map[string]bool{}, perKey: map[string][]string{}}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for wr := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(wr), 7))
			seq := 0
			for w.total() < target {
				err := func() error {
					tx, err := o.Pool.Begin(ctx)
					if err != nil {
						return err
					}
					defer tx.Rollback(ctx)
					seq++
					if _, err := tx.Exec(ctx, "INSERT INTO "+o.Schema+".orders VALUES ($1, $2)", fmt.Sprintf("%s%d-%d", tag, wr, seq), seq); err != nil {
						return err
					}
					n := 1 + rng.IntN(3)
					var ids, keys []string
					for i := range n {
						key := fmt.Sprintf("%s%d-k%d", tag, wr, rng.IntN(10))
						payload, _ := json.Marshal(map[string]any{"writer": wr, "seq": seq, "i": i})
						ev := &sdk.Event{AggregateType: "order", AggregateID: key, EventType: "order.updated", Payload: payload}
						if err := sw.Write(ctx, tx, ev); err != nil {
							return err
						}
						ids = append(ids, ev.ID.String())
						keys = append(keys, "order:"+key)
					}
					if rng.IntN(10) == 0 {
						if err := tx.Rollback(ctx); err != nil {
							return err
						}
						w.mu.Lock()
						for _, id := range ids {
							w.rolledBack[id] = true
						}
						w.mu.Unlock()
						return nil
					}
					if err := tx.Commit(ctx); err != nil {
						return err
					}
					w.mu.Lock()
					for i, id := range ids {
						w.committed[id] = true
						w.perKey[keys[i]] = append(w.perKey[keys[i]], id)
					}
					w.mu.Unlock()
					return nil
				}()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	return w
}

// check verifies that exactly the committed events arrived, in commit order
// per key (ignoring repeats of an event already seen), and returns how many
// messages were duplicates.
func (w *workload) check(t *testing.T, got []received) (dups int) {
	t.Helper()
	seen := map[string]bool{}
	arrival := map[string][]string{}
	for _, m := range got {
		if w.rolledBack[m.id] {
			t.Fatalf("event %s of a rolled-back transaction was relayed", m.id)
		}
		if !w.committed[m.id] {
			t.Fatalf("unknown event %s relayed (subject %s)", m.id, m.subject)
		}
		if seen[m.id] {
			dups++
			continue
		}
		seen[m.id] = true
		key := m.headers.Get("ce-aggregatetype") + ":" + m.headers.Get("ce-subject")
		arrival[key] = append(arrival[key], m.id)
	}
	for id := range w.committed {
		if !seen[id] {
			t.Fatalf("committed event %s never arrived (%d of %d arrived)", id, len(seen), len(w.committed))
		}
	}
	for key, want := range w.perKey {
		gotIDs := arrival[key]
		if strings.Join(gotIDs, ",") != strings.Join(want, ",") {
			for i := range min(len(gotIDs), len(want)) {
				if gotIDs[i] != want[i] {
					t.Fatalf("key %s: event %d arrived as %s, committed as %s: order per key broken", key, i, gotIDs[i], want[i])
				}
			}
			t.Fatalf("key %s: %d events arrived, %d committed", key, len(gotIDs), len(want))
		}
	}
	return dups
}

// waitDelivered waits until every row has delivered_at set.
func waitDelivered(t *testing.T, o *testutil.Outbox, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var n int
	for time.Now().Before(deadline) {
		if err := o.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+o.Schema+".events WHERE delivered_at IS NULL").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	rows, _ := o.Pool.Query(context.Background(), "SELECT id::text, aggregate_id, event_type, created_at FROM "+o.Schema+".events WHERE delivered_at IS NULL LIMIT 5")
	for rows.Next() {
		var id, agg, et string
		var at time.Time
		rows.Scan(&id, &agg, &et, &at)
		t.Logf("undelivered row %s %s %s %s", id, agg, et, at)
	}
	rows.Close()
	t.Fatalf("%d rows still have no delivered_at after %s", n, timeout)
}

func TestRelayDeliversCommittedEventsInOrder(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	cfg, stream, _ := natsConfig(t, o, "")
	relay := startRelay(t, cfg)
	relay.waitLog("streaming started", 30*time.Second)

	w := writeWorkload(t, o, 8, 10000)
	got := readStream(t, stream, len(w.committed), 2*time.Minute)
	if dups := w.check(t, got); dups != 0 {
		t.Errorf("%d duplicates in normal operation, want 0", dups)
	}
	waitDelivered(t, o, 30*time.Second)
	if code := relay.stop(); code != 0 {
		t.Fatalf("relay exited %d after SIGTERM, want 0", code)
	}
	t.Logf("%d events committed, %d rolled back, all relayed in order", len(w.committed), len(w.rolledBack))
}

func TestRelaySurvivesKill9(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	cfg, stream, _ := natsConfig(t, o, "")
	relay := startRelay(t, cfg)
	relay.waitLog("streaming started", 30*time.Second)

	done := make(chan *workload)
	go func() { done <- writeWorkload(t, o, 8, 10000) }()
	var w *workload
	kills := 0
	for w == nil {
		select {
		case w = <-done:
		case <-time.After(time.Duration(200+rand.IntN(600)) * time.Millisecond):
			if kills < 4 {
				relay.kill()
				kills++
				relay = startRelay(t, cfg)
			}
		}
	}
	if kills < 2 {
		t.Logf("only %d kills happened during the writes; killing once more after", kills)
		relay.kill()
		relay = startRelay(t, cfg)
	}
	got := readStream(t, stream, len(w.committed), 2*time.Minute)
	dups := w.check(t, got)
	waitDelivered(t, o, time.Minute)
	relay.stop()
	t.Logf("%d kill -9s, %d events committed, none lost, %d duplicates reached the stream (duplicate window 100ms)", kills, len(w.committed), dups)
}

func TestRelayPlainSQLInserts(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	cfg, stream, prefix := natsConfig(t, o, "")
	relay := startRelay(t, cfg)
	relay.waitLog("streaming started", 30*time.Second)
	ctx := context.Background()
	_, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('invoice', 'inv-1', 'invoice.issued', convert_to('{"amount": 12}', 'UTF8')),
		       ('invoice', 'inv-1', 'invoice.paid', '\x7b7d'::bytea)`, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	got := readStream(t, stream, 2, time.Minute)
	if len(got) != 2 {
		t.Fatalf("got %d messages, want 2", len(got))
	}
	first := got[0]
	if first.subject != prefix+".invoice.invoice.issued" || string(first.data) != `{"amount": 12}` {
		t.Errorf("first message: subject %q data %q", first.subject, first.data)
	}
	for h, want := range map[string]string{"ce-type": "invoice.issued", "ce-subject": "inv-1", "ce-specversion": "1.0",
		"ce-schemaversion": "1.0", "content-type": "application/json", "ce-aggregatetype": "invoice"} {
		if v := first.headers.Get(h); v != want {
			t.Errorf("header %s = %q, want %q", h, v, want)
		}
	}
	if first.id == "" || first.headers.Get("ce-id") != first.id {
		t.Errorf("Nats-Msg-Id %q and ce-id %q must both be the event id", first.id, first.headers.Get("ce-id"))
	}
	waitDelivered(t, o, 30*time.Second)
	relay.stop()
}

func TestRelayDeliversRowsWrittenBeforeFirstStart(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	// Written before the slot exists: only the slot's snapshot can find them.
	for i := range 50 {
		if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload) VALUES ('a', $1, 'a.made', '{}')`, fmt.Sprint(i%5)); err != nil {
			t.Fatal(err)
		}
	}
	cfg, stream, _ := natsConfig(t, o, "")
	relay := startRelay(t, cfg)
	relay.waitLog("snapshot delivered", 30*time.Second)
	if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload) VALUES ('a', '1', 'a.after', '{}')`); err != nil {
		t.Fatal(err)
	}
	got := readStream(t, stream, 51, time.Minute)
	if len(got) != 51 {
		t.Fatalf("got %d messages, want 51 (50 from the snapshot, 1 streamed)", len(got))
	}
	waitDelivered(t, o, 30*time.Second)
	relay.stop()
}
