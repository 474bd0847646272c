package relay

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxrelay/outbox/internal/testutil"
)

// TestMarkerMarksLateRowsAndGivesUpOnMissingOnes drives the marker against a
// real outbox: rows that exist are marked at once; a row that becomes visible
// only later (the commit-visibility race) is marked on a later flush; a row
// that never appears is given up on after markGiveUp. Every item is passed on
// (marked) exactly once.
func TestMarkerMarksLateRowsAndGivesUpOnMissingOnes(t *testing.T) {
	for _, mode := range []string{"mark", "delete"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			o := testutil.NewOutbox(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			insert := func(id uuid.UUID) {
				t.Helper()
				if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (id, aggregate_type, aggregate_id, event_type, payload) VALUES ($1, 'a', '1', 'e', '{}')`, id); err != nil {
					t.Fatal(err)
				}
			}
			var present []uuid.UUID
			for range 300 {
				id := uuid.Must(uuid.NewV7())
				insert(id)
				present = append(present, id)
			}
			lateID, never := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())

			cfg := DeliveryConfig{OnDelivered: mode, MarkInterval: Duration(10 * time.Millisecond), MarkBatch: 100}
			m := newMarker(o.Pool, o.Schema, cfg, slog.New(slog.DiscardHandler))
			in, out := make(chan []*item), make(chan []*item, 64)
			m.in, m.marked = in, out
			done := make(chan struct{})
			go func() { m.run(ctx); close(done) }()

			pos := newPosition(0)
			txn := pos.begin()
			all := append(append([]uuid.UUID{}, present...), lateID, never)
			txn.add(len(all))
			var finished atomic.Bool
			txn.whenDone(func() { finished.Store(true) })
			txn.commit(1)
			go func() {
				for _, id := range all {
					in <- []*item{{ev: &Event{ID: id}, txn: txn}}
				}
			}()
			// What complete does with what the marker passes on; each item
			// once.
			seen := map[*item]bool{}
			late := time.After(300 * time.Millisecond)
			deadline := time.After(15 * time.Second)
			for !finished.Load() {
				select {
				case items := <-out:
					for _, it := range items {
						if seen[it] {
							t.Fatalf("event %s passed on twice", it.ev.ID)
						}
						seen[it] = true
						it.txn.done()
					}
				case <-late:
					insert(lateID) // visible only now
				case <-deadline:
					t.Fatalf("transaction not finished: %d of %d items marked", len(seen), len(all))
				}
			}
			if len(seen) != len(all) {
				t.Fatalf("marked %d items, want %d", len(seen), len(all))
			}
			var left, marked int
			if err := o.Pool.QueryRow(ctx, `SELECT count(*), count(delivered_at) FROM `+o.Schema+`.events`).Scan(&left, &marked); err != nil {
				t.Fatal(err)
			}
			switch mode {
			case "mark":
				if left != len(present)+1 || marked != left {
					t.Fatalf("%d rows, %d marked; want all %d marked (the late one too)", left, marked, len(present)+1)
				}
			case "delete":
				if left != 0 {
					t.Fatalf("%d rows left; want all deleted (the late one too)", left)
				}
			}
			cancel()
			<-done
		})
	}
}
