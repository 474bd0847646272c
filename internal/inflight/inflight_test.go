package inflight

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	var g Gate
	if !g.Enter() {
		t.Fatal("Enter on an open gate = false")
	}
	closed := make(chan bool)
	go func() { closed <- g.Close() }()
	for !g.Closed() {
		time.Sleep(time.Millisecond)
	}
	if g.Enter() {
		t.Fatal("Enter after Close = true")
	}
	if g.Close() {
		t.Fatal("a second Close = true")
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a call was in progress")
	case <-time.After(20 * time.Millisecond):
	}
	g.Leave()
	if !<-closed {
		t.Fatal("the first Close = false")
	}
}

func TestEnterPublish(t *testing.T) {
	closedErr := errors.New("closed")
	var g Gate
	if errs, ok := g.EnterPublish(context.Background(), 0, "x", closedErr); ok || errs != nil {
		t.Fatalf("empty batch: %v, %v; want nil, false", errs, ok)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs, ok := g.EnterPublish(ctx, 2, "x", closedErr)
	if ok || len(errs) != 2 || !errors.Is(errs[1], context.Canceled) || !strings.HasPrefix(errs[0].Error(), "x: publish: ") {
		t.Fatalf("cancelled context: %v, %v", errs, ok)
	}
	if _, ok := g.EnterPublish(context.Background(), 1, "x", closedErr); !ok {
		t.Fatal("open gate turned a call away")
	}
	g.Leave()
	if !g.Close() { // would wait forever on a call not left
		t.Fatal("Close = false")
	}
	if errs, ok := g.EnterPublish(context.Background(), 3, "x", closedErr); ok || len(errs) != 3 || errs[2] != closedErr {
		t.Fatalf("closed gate: %v, %v", errs, ok)
	}
}
