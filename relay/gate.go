package relay

import (
	"context"
	"sync/atomic"
	"time"
)

// gate bounds the events between the replication stream and the marker: at
// most maxItems events and maxBytes of their weight (payload plus 256 bytes
// each); an event alone in the pipeline always passes, however large. One
// goroutine (the stream) takes room; any goroutine releases it. A counter and
// a wake-up channel instead of a channel slot per event: releasing a batch of
// marked rows is one atomic add, not one channel receive per row.
type gate struct {
	maxItems, maxBytes int64
	items, bytes       atomic.Int64
	room               chan struct{} // one pending wake-up after a release
}

func newGate(maxItems int, maxBytes int64) *gate {
	return &gate{maxItems: int64(maxItems), maxBytes: maxBytes, room: make(chan struct{}, 1)}
}

// full reports whether an event of weight must wait.
func (g *gate) full(weight int64) bool {
	n := g.items.Load()
	return n > 0 && (n+1 > g.maxItems || g.bytes.Load()+weight > g.maxBytes)
}

// take counts an event of weight in. The caller checked full (or waited).
func (g *gate) take(weight int64) {
	g.items.Add(1)
	g.bytes.Add(weight)
}

// release counts n events of total weight bytes out and wakes a waiter.
func (g *gate) release(n int, bytes int64) {
	g.items.Add(-int64(n))
	g.bytes.Add(-bytes)
	select {
	case g.room <- struct{}{}:
	default:
	}
}

// held is the number of events in the pipeline.
func (g *gate) held() int { return int(g.items.Load()) }

// wait blocks until an event of weight fits, calling keepalive (when set)
// every interval meanwhile so PostgreSQL does not time the stream out.
func (g *gate) wait(ctx context.Context, weight int64, interval time.Duration, keepalive func() error) error {
	var tick <-chan time.Time
	if keepalive != nil {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for g.full(weight) {
		select {
		case <-g.room:
		case <-tick:
			if err := keepalive(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
