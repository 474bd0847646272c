package relay

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// TestDispatcherFinishesUnroutedItems: an item with no deliveries (no route
// took its event) is finished at once, so it goes on to the marker like a
// delivered one, and stays counted in its transaction until then.
func TestDispatcherFinishesUnroutedItems(t *testing.T) {
	in, delivered := make(chan []*item, 1), make(chan []*item, 1)
	d := newDispatcher(DeliveryConfig{BatchSize: 10, BatchesInFlight: 1}, nil, slog.New(slog.DiscardHandler), nil, nil)
	d.in, d.delivered = in, delivered
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.run(ctx)

	pos := newPosition(0)
	txn := pos.begin()
	txn.add(1)
	txn.commit(100)
	it := &item{ev: &Event{EventType: "nobody.wants.this"}, txn: txn}
	in <- []*item{it}
	select {
	case got := <-delivered:
		if len(got) != 1 || got[0] != it {
			t.Fatalf("finished %v, want the unrouted item", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dispatcher never finished an item without deliveries: its row would never be marked")
	}
	if c := pos.confirmable(0); c != 0 {
		t.Errorf("the position moved to %s before the unrouted event was marked", c)
	}
	txn.done() // what complete does once the row is marked
	if c := pos.confirmable(0); c != 100 {
		t.Errorf("the position is %s after the unrouted event was marked, want 0/64", c)
	}
}
