// Package inflight lets a sink's Close wait for the Publish calls in progress
// and turn away the calls that come after it.
package inflight

import (
	"context"
	"fmt"
	"sync"
)

// Gate admits calls until it is closed; closing it waits for the calls it
// admitted. The zero Gate is open. A Gate is safe for concurrent use.
type Gate struct {
	mu     sync.RWMutex
	closed bool
	calls  sync.WaitGroup
}

// Enter admits a call and reports true, or reports false once the gate is
// closed. A call admitted must Leave when it is done.
func (g *Gate) Enter() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return false
	}
	g.calls.Add(1)
	return true
}

// Leave ends a call that Enter admitted.
func (g *Gate) Leave() { g.calls.Done() }

// Close closes the gate, then waits until every call it admitted has left.
// It reports whether it closed the gate: a Close after the first returns
// false at once, without waiting.
func (g *Gate) Close() bool {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return false
	}
	g.closed = true
	g.mu.Unlock()
	g.calls.Wait()
	return true
}

// Closed reports whether Close has been called.
func (g *Gate) Closed() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.closed
}

// EnterPublish admits a sink's Publish of n messages. ok reports whether the
// call may send; it must then Leave. Otherwise errs is the batch's result:
// nil for an empty batch, closed for every message once the gate is closed,
// and the context's error ("<sink>: publish: ...") for every message when ctx
// is done: a write started then could land after the call reported failure.
func (g *Gate) EnterPublish(ctx context.Context, n int, sink string, closed error) (errs []error, ok bool) {
	if n == 0 {
		return nil, false
	}
	if !g.Enter() {
		return all(n, closed), false
	}
	if err := ctx.Err(); err != nil {
		g.Leave()
		return all(n, fmt.Errorf("%s: publish: %w", sink, err)), false
	}
	return nil, true
}

func all(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}
