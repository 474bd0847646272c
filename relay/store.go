package relay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/pgident"
	"github.com/outboxrelay/outbox/sdk/pgtime"
)

// marker marks finished rows delivered (or deletes them), one statement per
// flush with up to markInFlight statements at once, and only then lets the
// position move past them.
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
	in       chan []*item
	release  func(n int, bytes int64)
	logger   *slog.Logger
}

const (
	markInFlight = 4
	markGiveUp   = 2 * time.Second
)

func newMarker(pool *pgxpool.Pool, schema, onDelivered string, cfg DeliveryConfig, logger *slog.Logger, release func(n int, bytes int64)) *marker {
	table := pgident.Quote(schema) + ".events"
	counted := "UPDATE " + table + " SET delivered_at = now() WHERE id = ANY($1)"
	stmt := counted + " RETURNING id"
	if onDelivered == "delete" {
		counted, stmt = "", "DELETE FROM "+table+" WHERE id = ANY($1) RETURNING id"
	}
	return &marker{pool: pool, stmt: stmt, counted: counted, interval: cfg.MarkInterval.D(), batch: cfg.MarkBatch,
		in: make(chan []*item, 64), release: release, logger: logger}
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
			now := time.Now()
			finished, bytes := 0, int64(0)
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
				it.txn.Done()
				finished++
				bytes += it.weight
			}
			m.release(finished, bytes)
			if len(pending) >= m.batch {
				start()
			}
		case <-ctx.Done():
			return
		}
	}
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

// deadLetterWriter records deliveries that failed for good.
type deadLetterWriter struct {
	pool   *pgxpool.Pool
	stmt   string
	logger *slog.Logger
}

func newDeadLetterWriter(pool *pgxpool.Pool, schema string, logger *slog.Logger) *deadLetterWriter {
	table := pgident.Quote(schema) + ".dead_letters"
	// A replayed event that fails again returns to its row: attempts add up.
	// event_seq, the event's seq (replays follow it: replay.go), is read
	// from the event's row, which exists while its delivery is in flight.
	stmt := `INSERT INTO ` + table + ` AS d (event_id, aggregate_type, aggregate_id, event_type, schema_version,
	  payload, content_type, headers, tenant_id, occurred_at, created_at, route, sink, destination, attempts,
	  last_error, errors, first_failed_at, last_failed_at, event_seq)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULLIF($9, ''), $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
	  (SELECT seq FROM ` + pgident.Quote(schema) + `.events WHERE id = $1))
	ON CONFLICT (event_id, route) DO UPDATE SET
	  event_seq = coalesce(d.event_seq, EXCLUDED.event_seq),
	  attempts = d.attempts + EXCLUDED.attempts,
	  last_error = EXCLUDED.last_error,
	  errors = d.errors || EXCLUDED.errors,
	  last_failed_at = EXCLUDED.last_failed_at,
	  sink = EXCLUDED.sink,
	  destination = EXCLUDED.destination,
	  replay_status = CASE WHEN d.replay_status = 'delivering' THEN 'failed' ELSE d.replay_status END`
	return &deadLetterWriter{pool: pool, stmt: stmt, logger: logger}
}

// write inserts the dead letter, retrying until it is written or ctx is done.
// Its texts are sanitized (sanitize.go): a data exception (SQLSTATE class 22)
// is answered at once with a stricter copy, never retried as it was.
func (w *deadLetterWriter) write(ctx context.Context, dl *delivery) error {
	e := dl.msg.Event
	text := newDeadLetterText(dl, escapeUnstorable)
	first := dl.first
	if first.IsZero() {
		first = time.Now()
	}
	// The row's own values, infinities included (the zero time is a value
	// too: 0001-01-01).
	occurred, created := pgtime.ToPG(e.OccurredAt, e.OccurredAtInf), pgtime.ToPG(e.CreatedAt, e.CreatedAtInf)
	bo := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(5*time.Second)), ctx)
	insert := func() error {
		_, err := w.pool.Exec(ctx, w.stmt, e.ID, text.aggregateType, text.aggregateID, text.eventType, text.schemaVersion,
			e.Payload, text.contentType, text.headers, text.tenantID, occurred, created, text.route, text.sink,
			text.destination, dl.msg.Attempt, text.lastError, text.errors, first, time.Now())
		return err
	}
	return backoff.Retry(func() error {
		err := insert()
		for next := text.stricter(dl, err); next != nil; next = text.stricter(dl, err) {
			w.logger.Warn("PostgreSQL refused the dead letter's text; storing it with every non-ASCII character escaped",
				"event_id", e.ID.String(), "route", dl.route.Name, "error", err)
			text = next
			err = insert()
		}
		if err != nil && ctx.Err() == nil {
			w.logger.Error("writing dead letter failed; retrying", "event_id", e.ID.String(), "route", dl.route.Name, "error", err)
			return fmt.Errorf("dead letter: %w", err)
		}
		return err
	}, bo)
}
