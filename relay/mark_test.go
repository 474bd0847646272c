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
// that never appears is given up on after markGiveUp. Every item is released
// and its transaction finished exactly once.
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
			late, never := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())

			var released atomic.Int64
			cfg := DeliveryConfig{MarkInterval: Duration(10 * time.Millisecond), MarkBatch: 100}
			m := newMarker(o.Pool, o.Schema, mode, cfg, slog.New(slog.DiscardHandler), func(n int, _ int64) { released.Add(int64(n)) })
			done := make(chan struct{})
			go func() { m.run(ctx); close(done) }()

			pos := NewPosition(0)
			txn := pos.Begin()
			all := append(append([]uuid.UUID{}, present...), late, never)
			txn.Add(len(all))
			var finished atomic.Bool
			txn.OnDone(func() { finished.Store(true) })
			txn.Commit(1)
			for _, id := range all {
				m.in <- []*item{{ev: &Event{ID: id}, txn: txn}}
			}
			time.Sleep(300 * time.Millisecond)
			insert(late) // visible only now
			deadline := time.Now().Add(15 * time.Second)
			for !finished.Load() && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if !finished.Load() {
				t.Fatalf("transaction not finished: %d of %d items released", released.Load(), len(all))
			}
			if got := released.Load(); got != int64(len(all)) {
				t.Fatalf("released %d items, want %d", got, len(all))
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
