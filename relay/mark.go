package relay

import (
	"context"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// marker marks the rows of handled events delivered (or deletes them), one
// statement per flush with up to markInFlight statements at once, and passes
// the events on (marked) only once their rows are: the position cannot move
// past a row that a crash would leave unmarked.
//
// A row can be decoded from the WAL a moment before its transaction is visible
// to other sessions (the commit record is flushed before the transaction leaves
// the proc array), so an UPDATE issued at once may not find it. The statement
// returns the ids it touched; the others are tried again with the next flushes
// and only given up on (a row deleted meanwhile) after markGiveUp.
type marker struct {
	pool *pgxpool.Pool
	stmt string
	// counted, when set, is stmt without RETURNING: when it touches every
	// id, decoding the returned ids is saved; when it touches fewer, stmt
	// runs to learn which. Mark mode only: a second DELETE cannot tell.
	counted  string
	interval time.Duration
	batch    int
	logger   *slog.Logger

	// Set by the pipeline.
	in     <-chan []*item // handled events
	marked chan<- []*item // events whose rows are marked
}

const (
	markInFlight = 4
	markGiveUp   = 2 * time.Second
)

func newMarker(pool *pgxpool.Pool, schema string, cfg DeliveryConfig, logger *slog.Logger) *marker {
	table := outboxschema.Quote(schema) + ".events"
	counted := "UPDATE " + table + " SET delivered_at = now() WHERE id = ANY($1)"
	stmt := counted + " RETURNING id"
	if cfg.OnDelivered == "delete" {
		counted, stmt = "", "DELETE FROM "+table+" WHERE id = ANY($1) RETURNING id"
	}
	return &marker{pool: pool, stmt: stmt, counted: counted, interval: cfg.MarkInterval.D(), batch: cfg.MarkBatch, logger: logger}
}

type markResult struct {
	items []*item
	found map[[16]byte]bool
	err   error
}

// run marks items until ctx is done; a statement that fails is retried, never
// skipped.
func (m *marker) run(ctx context.Context) {
	var pending []*item
	firstMiss := map[*item]time.Time{}
	results := make(chan markResult, markInFlight)
	inflight := 0
	t := time.NewTicker(m.interval)
	defer t.Stop()
	start := func() {
		if len(pending) == 0 || inflight >= markInFlight {
			return
		}
		n := min(len(pending), m.batch)
		batch := make([]*item, n)
		copy(batch, pending)
		rest := copy(pending, pending[n:])
		clear(pending[rest:])
		pending = pending[:rest]
		inflight++
		go func() {
			found, err := m.exec(ctx, batch)
			results <- markResult{items: batch, found: found, err: err}
		}()
	}
	for {
		select {
		case items := <-m.in:
			pending = append(pending, items...)
			if len(pending) >= m.batch {
				start()
			}
		case <-t.C:
			start()
		case r := <-results:
			inflight--
			if r.err != nil {
				return // ctx is done
			}
			var marked []*item
			marked, pending = m.settle(r, firstMiss, pending)
			if len(marked) > 0 {
				select {
				case m.marked <- marked:
				case <-ctx.Done():
					return
				}
			}
			if len(pending) >= m.batch {
				start()
			}
		case <-ctx.Done():
			return
		}
	}
}

// settle sorts the items of a statement that ran: those whose rows it
// touched, or that were given up on, are marked; the others are appended to
// pending, to be tried again. marked reuses r.items.
func (m *marker) settle(r markResult, firstMiss map[*item]time.Time, pending []*item) (marked, stillPending []*item) {
	now := time.Now()
	marked = r.items[:0]
	for _, it := range r.items {
		if r.found != nil && !r.found[[16]byte(it.ev.ID)] {
			first, seen := firstMiss[it]
			if !seen {
				firstMiss[it] = now
				first = now
			}
			if now.Sub(first) < markGiveUp {
				pending = append(pending, it)
				continue
			}
			m.logger.Warn("delivered row not found to mark; was it deleted?", "event_id", it.ev.ID.String())
		}
		delete(firstMiss, it)
		marked = append(marked, it)
	}
	return marked, pending
}

// exec runs the mark statement for items, retrying until it succeeds or ctx
// is done, and returns the ids it touched, or nil when it touched them all.
func (m *marker) exec(ctx context.Context, items []*item) (map[[16]byte]bool, error) {
	// [16]byte encodes as a binary uuid; uuid.UUID would go through
	// driver.Valuer and text.
	ids := make([][16]byte, len(items))
	for i, it := range items {
		ids[i] = it.ev.ID
	}
	var found map[[16]byte]bool
	bo := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(5*time.Second)), ctx)
	err := backoff.Retry(func() error {
		var err error
		found, err = m.markOnce(ctx, ids)
		if err != nil && ctx.Err() == nil {
			m.logger.Warn("marking delivered rows failed; retrying", "rows", len(ids), "error", err)
		}
		return err
	}, bo)
	return found, err
}

// markOnce runs the mark statement once; see exec.
func (m *marker) markOnce(ctx context.Context, ids [][16]byte) (map[[16]byte]bool, error) {
	if m.counted != "" {
		tag, err := m.pool.Exec(ctx, m.counted, ids)
		if err != nil {
			return nil, err
		}
		if tag.RowsAffected() == int64(len(ids)) {
			return nil, nil // every row marked
		}
	}
	found := make(map[[16]byte]bool, len(ids))
	rows, err := m.pool.Query(ctx, m.stmt, ids)
	if err != nil {
		return nil, err
	}
	var id [16]byte
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		found[id] = true
		return nil
	})
	return found, err
}
