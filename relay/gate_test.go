package relay

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestGateBoundsItemsAndBytes(t *testing.T) {
	g := newGate(3, 1000)
	if g.full(5000) {
		t.Fatal("an event alone in an empty pipeline must pass, however large")
	}
	g.take(5000)
	if !g.full(1) {
		t.Fatal("byte bound not applied")
	}
	g.release(1, 5000)
	for range 3 {
		if g.full(10) {
			t.Fatalf("full with %d of 3 items", g.held())
		}
		g.take(10)
	}
	if !g.full(10) {
		t.Fatal("item bound not applied")
	}
	if g.held() != 3 {
		t.Fatalf("held %d, want 3", g.held())
	}
}

func TestGateWaitWakesOnReleaseAndKeepsAlive(t *testing.T) {
	g := newGate(1, 1<<20)
	g.take(10)
	alive := make(chan struct{}, 100)
	keepalive := func() error { alive <- struct{}{}; return nil }
	done := make(chan error, 1)
	go func() { done <- g.wait(context.Background(), 10, 5*time.Millisecond, keepalive) }()
	select {
	case <-alive: // still waiting, reporting the position meanwhile
	case err := <-done:
		t.Fatalf("wait returned before a release: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("keepalive not called while waiting")
	}
	g.release(1, 10)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait not woken by the release")
	}

	g.take(10)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.wait(ctx, 10, time.Second, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait on a cancelled context: %v", err)
	}
	boom := errors.New("stream gone")
	if err := g.wait(context.Background(), 10, time.Millisecond, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("keepalive error not returned: %v", err)
	}
}
