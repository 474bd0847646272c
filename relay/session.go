package relay

import (
	"context"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// session is one stretch of being connected: leadership, slot, pipeline and
// stream. Any error ends the session; the relay then starts a new one from
// the slot's confirmed position, so nothing in memory needs to survive.
type session struct {
	r      *Relay
	cfg    *Config
	logger *slog.Logger

	pool  *pgxpool.Pool
	table string // quoted schema.events
	// ranBefore: a relay used this slot before (its relay_state row existed).
	ranBefore bool
}

// run is a session from start to end, in the order its parts take over:
// connect (connect.go), lead (leader.go), open the slot (slot.go), start the
// pipeline (pipeline.go), deliver a new slot's snapshot (snapshot.go), then
// stream (stream.go) until ctx is done or something fails.
func (s *session) run(ctx context.Context) error {
	s.table = outboxschema.Quote(s.cfg.Database.Schema) + ".events"
	if err := s.connect(ctx); err != nil {
		return err
	}
	defer s.pool.Close()

	lock, err := s.lead(ctx)
	if err != nil || lock == nil { // lock is nil when ctx was done while standby
		return err
	}
	defer lock.Close(context.Background())
	// Leadership is lost with the lock's connection: end the session then.
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go s.watchLock(sctx, lock, cancel)

	sl, err := s.openSlot(sctx)
	if err != nil {
		return err
	}
	defer sl.conn.Close(context.Background())

	// The pipeline runs on its own context: on shutdown it keeps delivering
	// while the stream drains.
	pctx, pcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		pcancel()
		wg.Wait()
	}()
	pos := newPosition(sl.start)
	p := s.newPipeline(pos)
	wg.Add(3)
	go func() { defer wg.Done(); p.run(pctx) }()
	go func() { defer wg.Done(); s.sample(pctx) }()
	go func() { defer wg.Done(); s.retain(pctx) }()

	if sl.snapshot != nil {
		err := s.deliverSnapshot(sctx, sl.snapshot, p)
		sl.snapshot.Rollback(context.Background())
		if err != nil {
			return err
		}
	}
	return s.stream(sctx, sl, p, sl.snapshot == nil)
}
