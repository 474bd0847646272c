package relay

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// Leadership: several relays may run against one outbox and slot; the one
// that holds the advisory lock lockID on a connection of its own is active,
// the others are standbys that ask for the lock every standby_poll. The lock
// is lost with its connection (PostgreSQL releases it when the relay dies or
// is cut off), and the active relay steps down when a ping of it fails.

// lockID is the advisory lock that makes one relay per outbox and slot active.
func lockID(schema, slot string) int64 {
	h := fnv.New64a()
	h.Write([]byte("outbox.relay." + schema + "." + slot))
	return int64(h.Sum64() >> 1)
}

// lead waits until this relay holds the outbox's advisory lock, and returns
// the connection that holds it, or nil when ctx was done first.
func (s *session) lead(ctx context.Context) (*pgx.Conn, error) {
	db := s.cfg.Database
	id := lockID(db.Schema, db.Slot)
	ccfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		return nil, fatal(fmt.Errorf("database.url: %v", err))
	}
	setLiveness(ccfg.RuntimeParams, db.FailoverTimeout.D())
	// A standby keeps one connection and asks for the lock on it every
	// standby_poll; an error ends the session (and so the connection).
	conn, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return nil, fmt.Errorf("connect for the leader lock: %w", err)
	}
	for logged := false; ; {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", id).Scan(&got); err != nil {
			conn.Close(context.Background())
			if ctx.Err() != nil {
				return nil, nil
			}
			return nil, fmt.Errorf("leader lock: %w", err)
		}
		if got {
			if err := s.recordHolder(ctx, conn); err != nil {
				conn.Close(context.Background())
				return nil, err
			}
			s.r.active.Store(true)
			s.r.metrics.setActive(true)
			s.logger.Info("relay is active", "slot", db.Slot, "schema", db.Schema)
			return conn, nil
		}
		if !logged {
			s.logger.Info("relay is standby: another relay holds the outbox", "slot", db.Slot, "schema", db.Schema)
			logged = true
			s.r.recovered()
		}
		s.r.metrics.setActive(false)
		select {
		case <-time.After(db.StandbyPoll.D()):
		case <-ctx.Done():
			conn.Close(context.Background())
			return nil, nil
		}
	}
}

// recordHolder records this relay as the slot's holder in relay_state, learns
// whether a relay used the slot before, and warns when another slot tails the
// same outbox.
func (s *session) recordHolder(ctx context.Context, conn *pgx.Conn) error {
	db := s.cfg.Database
	host, _ := os.Hostname()
	holder := fmt.Sprintf("%s pid %d (%s)", host, os.Getpid(), s.r.version)
	var inserted bool
	err := conn.QueryRow(ctx, `INSERT INTO `+outboxschema.Quote(db.Schema)+`.relay_state (slot, snapshot_pending, holder, holder_since)
		VALUES ($1, false, $2, now()) ON CONFLICT (slot) DO UPDATE SET holder = EXCLUDED.holder, holder_since = now(), updated_at = now()
		RETURNING (xmax = 0)`, db.Slot, holder).Scan(&inserted)
	if err != nil {
		return fmt.Errorf("record the active relay: %w", err)
	}
	s.ranBefore = !inserted
	rows, err := conn.Query(ctx, `SELECT r.slot FROM `+outboxschema.Quote(db.Schema)+`.relay_state r
		JOIN pg_replication_slots p ON p.slot_name = r.slot WHERE r.slot <> $1`, db.Slot)
	var others []string
	if err == nil {
		others, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	switch {
	case err != nil:
		// Only a warning depends on it.
		s.logger.Warn("could not check for other replication slots tailing this outbox", "slot", db.Slot, "error", err)
	case len(others) > 0:
		s.logger.Warn("another replication slot tails this outbox: delivered_at is shared, so each relay marks rows the other may not have delivered; use one slot (one relay config with all routes) per outbox",
			"slot", db.Slot, "other_slots", others)
	}
	return nil
}

// watchLock pings the lock's connection every standby_poll and ends the
// session (cancel) when a ping fails: the lock may be gone, and another
// relay active.
func (s *session) watchLock(ctx context.Context, lock *pgx.Conn, cancel context.CancelCauseFunc) {
	t := time.NewTicker(s.cfg.Database.StandbyPoll.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, c := context.WithTimeout(ctx, 5*time.Second)
			err := lock.Ping(pctx)
			c()
			if err != nil && ctx.Err() == nil {
				s.logger.Error("lost the leader lock's connection; stepping down", "error", err)
				cancel(fmt.Errorf("leader lock lost: %w", err))
				return
			}
		}
	}
}
