package relay

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestPositionConfirmsOnlyCompletePrefix(t *testing.T) {
	p := NewPosition(100)
	a := p.Begin()
	a.Add(2)
	a.Commit(200)
	b := p.Begin()
	b.Add(1)
	b.Commit(300)
	c := p.Begin() // no events, e.g. all dropped
	c.Commit(400)

	if got := p.Confirmable(1000); got != 100 {
		t.Fatalf("nothing done: confirmable %v, want 100", got)
	}
	b.Done() // a later transaction finishing first must not move the position
	if got := p.Confirmable(1000); got != 100 {
		t.Fatalf("b done before a: confirmable %v, want 100", got)
	}
	a.Done()
	if got := p.Confirmable(1000); got != 100 {
		t.Fatalf("a half done: confirmable %v, want 100", got)
	}
	a.Done()
	if got := p.Confirmable(1000); got != 400 {
		// a, b and the empty c are all complete; the queue is empty, so the
		// server's position is confirmable too.
		if got != 1000 {
			t.Fatalf("all done: confirmable %v, want 1000", got)
		}
	}
}

func TestPositionOpenTransactionHoldsServerPosition(t *testing.T) {
	p := NewPosition(10)
	open := p.Begin() // received Begin, not yet Commit
	open.Add(1)
	open.Done()
	if got := p.Confirmable(500); got != 10 {
		t.Fatalf("open transaction: confirmable %v, want 10", got)
	}
	open.Commit(600)
	if got := p.Confirmable(500); got != 600 {
		t.Fatalf("after commit: confirmable %v, want 600", got)
	}
	// Never goes backwards.
	if got := p.Confirmable(pglogrepl.LSN(5)); got != 600 {
		t.Fatalf("server position behind: confirmable %v, want 600", got)
	}
}

func TestPositionOnDone(t *testing.T) {
	p := NewPosition(0)
	called := 0
	tx := p.Begin()
	tx.OnDone(func() { called++ })
	tx.Add(1)
	tx.Commit(5)
	if called != 0 {
		t.Fatal("OnDone before the event finished")
	}
	tx.Done()
	if called != 1 {
		t.Fatalf("OnDone called %d times, want 1", called)
	}
}

func BenchmarkPosition(b *testing.B) {
	p := NewPosition(0)
	b.ReportAllocs()
	for i := range b.N {
		t := p.Begin()
		t.Add(1)
		t.Commit(pglogrepl.LSN(i + 1))
		t.Done()
	}
}
