package relay

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxrelay/outbox/internal/pgoutput"
)

// stream reads the slot's replication stream (internal/pgoutput) into the
// pipeline, on one goroutine: each transaction's Begin registers it with the
// position, each insert becomes an item counted in it and is submitted, its
// Commit gives the position its end LSN. Every status_interval, and when
// PostgreSQL asks, it reports the position the position says may be
// confirmed. The loop follows pglogrepl's demo (a deadline per receive, a
// status update on deadline, an immediate reply when asked), except that the
// position reported flushed is what has been delivered and marked, never
// just what was read.
type stream struct {
	s       *session
	sl      *slot
	rd      *pgoutput.Reader
	pipe    *pipeline
	pos     *position
	catchup *catchup // non-nil while resuming: skip rows already marked delivered

	txn *txn         // the transaction being read
	row pgoutput.Row // the insert being read

	interval  time.Duration // status_interval
	next      time.Time     // when the next status update is due
	deadline  time.Time     // the read deadline set on the connection
	keepalive func() error  // reports the position now; for waits that block the stream
}

// stream reads the slot from its start and feeds inserts into the pipeline
// until ctx is done; then it drains the pipeline and confirms its final
// position. resumed is false after a new slot's snapshot.
func (s *session) stream(ctx context.Context, sl *slot, p *pipeline, resumed bool) error {
	db := s.cfg.Database
	rd, err := pgoutput.Start(ctx, sl.conn, pgoutput.StartOptions{Slot: db.Slot, Publication: db.Publication, Schema: db.Schema, Start: sl.start})
	if err != nil {
		return startReplicationError(err)
	}
	s.r.streaming.Store(true)
	s.r.recovered()
	s.logger.Info("streaming started", "slot", db.Slot, "publication", db.Publication, "from", sl.start.String())
	st := &stream{s: s, sl: sl, rd: rd, pipe: p, pos: p.pos, interval: s.cfg.Delivery.StatusInterval.D()}
	st.next = time.Now().Add(st.interval)
	st.keepalive = func() error {
		st.next = time.Now().Add(st.interval)
		return st.sendStatus(ctx)
	}
	if resumed && s.ranBefore && s.cfg.Delivery.OnDelivered == "mark" {
		st.catchup = &catchup{}
	}
	return st.run(ctx)
}

// run is the read loop.
func (st *stream) run(ctx context.Context) error {
	// Reads wait on the connection's read deadline, not on a context per
	// message (a context and pgconn's watcher per message cost ~13% of the
	// relay's CPU); cancelling ctx moves the deadline to now.
	conn := st.sl.conn.Conn()
	stopWake := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stopWake()
	defer conn.SetReadDeadline(time.Time{})
	for {
		if ctx.Err() != nil {
			conn.SetReadDeadline(time.Time{})
			st.pipe.handOffForDrain(st.s.r.drain)
			return st.drain(context.Cause(ctx))
		}
		if err := st.beforeRead(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			continue
		}
		kind, err := st.rd.Next(&st.row)
		if err != nil {
			if err := st.readFailed(ctx, err); err != nil {
				return err
			}
			continue
		}
		if err := st.handle(ctx, kind); err != nil {
			return err
		}
	}
}

// beforeRead reports the position when it is due, hands the routed events
// over when the next read may wait for the server, and sets the read
// deadline: the next status update, or sooner while a catch-up batch waits.
func (st *stream) beforeRead(ctx context.Context) error {
	if !time.Now().Before(st.next) {
		if err := st.keepalive(); err != nil {
			return err
		}
	}
	want := st.next
	if st.catchup != nil && len(st.catchup.buf) > 0 {
		// Do not hold the first events after a start for long.
		if soon := time.Now().Add(catchupLinger); soon.Before(want) {
			want = soon
		}
	}
	if st.pipe.pendingHandoff() && !st.buffered() {
		// The next read may wait: hand over what is routed first. While
		// more messages are already in memory, the events of several
		// transactions go over together.
		if err := st.pipe.handOff(ctx, st.keepalive); err != nil && ctx.Err() == nil {
			return err
		}
	}
	if !want.Equal(st.deadline) && ctx.Err() == nil {
		st.deadline = want
		st.sl.conn.Conn().SetReadDeadline(want)
	}
	return nil
}

// buffered reports whether more of the stream is already in memory, so that
// the next read will not wait for the server.
func (st *stream) buffered() bool {
	return st.sl.conn.Frontend().ReadBufferLen() > 0 || (st.sl.buf != nil && st.sl.buf.Buffered() > 0)
}

// readFailed handles an error of a read. A read that reached its deadline
// (a status update is due, or a catch-up batch waits) or that ctx cut short
// is no error; the events table turning out not to be the outbox's is fatal.
func (st *stream) readFailed(ctx context.Context, err error) error {
	timeout := pgconn.Timeout(err)
	if timeout && st.catchup != nil && ctx.Err() == nil {
		if err := st.flushCatchup(ctx); err != nil && ctx.Err() == nil {
			return err
		}
	}
	switch {
	case timeout || ctx.Err() != nil:
		return nil
	case errors.Is(err, pgoutput.ErrNotOutbox):
		return fatal(err)
	}
	return err
}

// handle acts on one message of the stream.
func (st *stream) handle(ctx context.Context, kind pgoutput.Kind) error {
	switch kind {
	case pgoutput.StatusRequested:
		st.next = time.Time{}
	case pgoutput.Begin:
		st.txn = st.pos.begin()
	case pgoutput.Commit:
		st.txn.commit(st.rd.Tx().EndLSN)
		st.txn = nil
	case pgoutput.Foreign:
		st.s.logger.Warn("publication includes a table that is not the outbox; ignoring its rows", "table", st.rd.ForeignTable())
	case pgoutput.Insert:
		if err := st.insert(ctx); err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

// insert hands the row just read to the pipeline as an item of its
// transaction, or, while resuming, to the catch-up check first.
func (st *stream) insert(ctx context.Context) error {
	it := newItem(&st.row, st.txn)
	if st.catchup != nil {
		return st.holdForCatchup(ctx, it)
	}
	return st.pipe.submit(ctx, it, st.keepalive)
}

// sendStatus reports the position that position.confirmable allows as
// written, flushed and applied.
func (st *stream) sendStatus(ctx context.Context) error {
	server := st.rd.ServerEnd()
	pos := st.pos.confirmable(server)
	if err := st.rd.Confirm(ctx, pos); err != nil {
		return err
	}
	st.s.r.metrics.setPosition(uint64(pos), uint64(server))
	return nil
}

// drain waits for the events in flight to finish (up to the drain timeout),
// then confirms the final position.
func (st *stream) drain(cause error) error {
	s, gate := st.s, st.pipe.gate
	s.logger.Info("stopping: finishing deliveries in flight", "in_flight", gate.held(), "reason", cause)
	deadline := time.Now().Add(s.r.drain)
	for gate.held() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := gate.held(); n > 0 {
		s.logger.Warn("stopping with deliveries unfinished; they are delivered again on the next start", "in_flight", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := st.sendStatus(ctx)
	s.logger.Info("stopped", "confirmed", st.pos.confirmable(st.rd.ServerEnd()).String())
	if err != nil {
		return err
	}
	if cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}
