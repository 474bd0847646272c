package relay

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestPositionConfirmsOnlyCompletePrefix(t *testing.T) {
	p := newPosition(100)
	a := p.begin()
	a.add(2)
	a.commit(200)
	b := p.begin()
	b.add(1)
	b.commit(300)
	c := p.begin() // no events, e.g. all dropped
	c.commit(400)

	if got := p.confirmable(1000); got != 100 {
		t.Fatalf("nothing done: confirmable %v, want 100", got)
	}
	b.done() // a later transaction finishing first must not move the position
	if got := p.confirmable(1000); got != 100 {
		t.Fatalf("b done before a: confirmable %v, want 100", got)
	}
	a.done()
	if got := p.confirmable(1000); got != 100 {
		t.Fatalf("a half done: confirmable %v, want 100", got)
	}
	a.done()
	if got := p.confirmable(1000); got != 400 {
		// a, b and the empty c are all complete; the queue is empty, so the
		// server's position is confirmable too.
		if got != 1000 {
			t.Fatalf("all done: confirmable %v, want 1000", got)
		}
	}
}

func TestPositionOpenTransactionHoldsServerPosition(t *testing.T) {
	p := newPosition(10)
	open := p.begin() // received Begin, not yet Commit
	open.add(1)
	open.done()
	if got := p.confirmable(500); got != 10 {
		t.Fatalf("open transaction: confirmable %v, want 10", got)
	}
	open.commit(600)
	if got := p.confirmable(500); got != 600 {
		t.Fatalf("after commit: confirmable %v, want 600", got)
	}
	// Never goes backwards.
	if got := p.confirmable(pglogrepl.LSN(5)); got != 600 {
		t.Fatalf("server position behind: confirmable %v, want 600", got)
	}
}

func TestPositionOnDone(t *testing.T) {
	p := newPosition(0)
	called := 0
	tx := p.begin()
	tx.whenDone(func() { called++ })
	tx.add(1)
	tx.commit(5)
	if called != 0 {
		t.Fatal("OnDone before the event finished")
	}
	tx.done()
	if called != 1 {
		t.Fatalf("OnDone called %d times, want 1", called)
	}
}

func BenchmarkPosition(b *testing.B) {
	p := newPosition(0)
	b.ReportAllocs()
	for i := range b.N {
		t := p.begin()
		t.add(1)
		t.commit(pglogrepl.LSN(i + 1))
		t.done()
	}
}
