package relay

import (
	"sync"

	"github.com/jackc/pglogrepl"
)

// position decides how far the replication slot may be confirmed. It is the
// one place that does: the slot's confirmed position only moves past a
// transaction once every event of that transaction, and of every transaction
// before it, has been delivered or dead-lettered on every route (or dropped
// as unrouted) and its row marked. A confirmed position is never re-sent by
// PostgreSQL, so confirming anything earlier would lose events after a crash.
//
// Transactions enter in commit order (begin), gain events (add), learn their
// end LSN (commit), and finish events (done) in any order. When no
// transaction is open or pending, the server's own WAL position may be
// confirmed, so an idle outbox does not pin WAL while other tables are busy.
type position struct {
	mu        sync.Mutex
	queue     []*txn // open or pending transactions, in commit order
	confirmed pglogrepl.LSN
}

// txn is one transaction's share of the position.
type txn struct {
	pos       *position
	end       pglogrepl.LSN
	pending   int
	committed bool
	onDone    func()
}

// newPosition starts at the slot's confirmed position.
func newPosition(start pglogrepl.LSN) *position {
	return &position{confirmed: start}
}

// begin registers a transaction as the newest one.
func (p *position) begin() *txn {
	t := &txn{pos: p}
	p.mu.Lock()
	p.queue = append(p.queue, t)
	p.mu.Unlock()
	return t
}

// add counts n more events of t that must finish before t may be confirmed.
func (t *txn) add(n int) {
	t.pos.mu.Lock()
	t.pending += n
	t.pos.mu.Unlock()
}

// whenDone sets a function called once t is complete and confirmable.
func (t *txn) whenDone(f func()) { t.onDone = f }

// commit records t's end LSN: once its events are done, the slot may be
// confirmed up to end.
func (t *txn) commit(end pglogrepl.LSN) {
	t.pos.mu.Lock()
	t.end, t.committed = end, true
	f := t.pos.advance()
	t.pos.mu.Unlock()
	runAll(f)
}

// done finishes one event of t.
func (t *txn) done() {
	t.pos.mu.Lock()
	t.pending--
	if t.pending < 0 {
		t.pos.mu.Unlock()
		panic("relay: position: more events done than added")
	}
	f := t.pos.advance()
	t.pos.mu.Unlock()
	runAll(f)
}

func runAll(fs []func()) {
	for _, f := range fs {
		f()
	}
}

// advance pops completed transactions from the front. Callers hold mu.
func (p *position) advance() []func() {
	var done []func()
	n := 0
	for _, t := range p.queue {
		if !t.committed || t.pending > 0 {
			break
		}
		if t.end > p.confirmed {
			p.confirmed = t.end
		}
		if t.onDone != nil {
			done = append(done, t.onDone)
		}
		n++
	}
	if n > 0 {
		clear(p.queue[:n])
		p.queue = p.queue[n:]
	}
	return done
}

// confirmable returns the position that may be reported as flushed.
// serverPos is the latest WAL position the server said it has sent; it is
// used only when no transaction is open or pending, because then everything
// up to it has been received and fully handled.
func (p *position) confirmable(serverPos pglogrepl.LSN) pglogrepl.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 && serverPos > p.confirmed {
		p.confirmed = serverPos
	}
	return p.confirmed
}
