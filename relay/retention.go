package relay

import (
	"context"
	"time"

	"github.com/outboxrelay/outbox/internal/retention"
)

// retain deletes delivered rows older than delivery.retention every
// delivery.retention_interval, in small batches (internal/retention, the code
// behind `outbox prune`), while this relay is active.
func (s *session) retain(ctx context.Context) {
	dl := s.cfg.Delivery
	if dl.Retention == 0 {
		return
	}
	t := time.NewTicker(dl.RetentionInterval.D())
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		var now time.Time
		if err := s.pool.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
			continue
		}
		res, err := retention.Prune(ctx, s.pool, retention.Options{Schema: s.cfg.Database.Schema, Before: now.Add(-dl.Retention.D()),
			BatchSize: 1000, Pause: 10 * time.Millisecond})
		if err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("retention: deleting delivered rows failed; trying again next interval", "error", err)
			}
			continue
		}
		if res.Deleted > 0 {
			s.logger.Info("retention: deleted delivered rows", "rows", res.Deleted, "older_than", dl.Retention.D(), "batches", res.Batches, "longest_batch", res.MaxBatch)
		}
	}
}
