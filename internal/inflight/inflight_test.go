package inflight

import (
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
