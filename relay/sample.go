package relay

import (
	"context"
	"time"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// sample reads slot lag and the backlog every database.sample_interval for the
// metrics, and raises the slot lag guard: a warning above lag_warn_bytes, an
// error (and outbox_slot_lag_level 2, for paging) above lag_page_bytes.
//
// The backlog count scans the events table (no index may cover delivered_at,
// so that marking stays a HOT update); the oldest age walks the created_at
// index. Both run with a 5 s statement timeout; raise sample_interval on very
// large tables, or use on_delivered: delete or outbox prune to keep it small.
func (s *session) sample(ctx context.Context) {
	db := s.cfg.Database
	t := time.NewTicker(db.SampleInterval.D())
	defer t.Stop()
	level := 0
	for {
		s.sampleOnce(ctx, &level)
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (s *session) sampleOnce(ctx context.Context, level *int) {
	db := s.cfg.Database
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for name, sink := range s.r.sinks {
		if p, ok := sink.(interface{ Ping(context.Context) error }); ok {
			pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
			s.r.metrics.setSinkUp(name, p.Ping(pctx) == nil)
			pcancel()
		}
	}
	var lag int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, db.Slot).Scan(&lag)
	if err == nil {
		newLevel := 0
		switch {
		case lag > db.LagPageBytes:
			newLevel = 2
		case lag > db.LagWarnBytes:
			newLevel = 1
		}
		if newLevel != *level {
			switch newLevel {
			case 2:
				s.logger.Error("replication slot lag above lag_page_bytes: WAL is piling up behind the relay", "slot", db.Slot, "lag_bytes", lag, "threshold", db.LagPageBytes)
			case 1:
				s.logger.Warn("replication slot lag above lag_warn_bytes", "slot", db.Slot, "lag_bytes", lag, "threshold", db.LagWarnBytes)
			default:
				s.logger.Info("replication slot lag back to normal", "slot", db.Slot, "lag_bytes", lag)
			}
			*level = newLevel
		}
		s.r.metrics.setSlotLag(lag, newLevel)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = '5s'"); err != nil {
		return
	}
	var n int64
	var age float64
	table := outboxschema.Quote(db.Schema) + ".events"
	err = tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+table+` WHERE delivered_at IS NULL),
		coalesce((SELECT extract(epoch FROM now() - created_at) FROM `+table+` WHERE delivered_at IS NULL AND isfinite(created_at) ORDER BY created_at LIMIT 1), 0)`).Scan(&n, &age)
	if err == nil {
		// A created_at centuries ago (written by hand) would overflow a
		// time.Duration (~292 years): cap the age at 285 years.
		s.r.metrics.setBacklog(n, time.Duration(min(age, 9e9)*float64(time.Second)))
	}
}
