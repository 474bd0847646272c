package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/pgident"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
	"github.com/outboxrelay/outbox/sdk/pgtime"
)

// deadLetterWriter records deliveries that failed for good.
type deadLetterWriter struct {
	pool   *pgxpool.Pool
	stmt   string
	logger *slog.Logger
}

func newDeadLetterWriter(pool *pgxpool.Pool, schema string, logger *slog.Logger) *deadLetterWriter {
	table := pgident.Quote(schema) + ".dead_letters"
	// A replayed event that fails again returns to its row: attempts add up.
	stmt := `INSERT INTO ` + table + ` AS d (` + outboxschema.DeadLetterEventColumns + `, ` + outboxschema.DeadLetterFailureColumns + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULLIF($9, ''), $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
	ON CONFLICT (event_id, route) DO UPDATE SET
	  attempts = d.attempts + EXCLUDED.attempts,
	  last_error = EXCLUDED.last_error,
	  errors = d.errors || EXCLUDED.errors,
	  last_failed_at = EXCLUDED.last_failed_at,
	  sink = EXCLUDED.sink,
	  destination = EXCLUDED.destination,
	  replay_status = CASE WHEN d.replay_status = ` + sqlDelivering + ` THEN ` + sqlFailed + ` ELSE d.replay_status END`
	return &deadLetterWriter{pool: pool, stmt: stmt, logger: logger}
}

// write inserts the dead letter, retrying until it is written or ctx is done.
// Its arguments follow outboxschema.DeadLetterEventColumns, then
// DeadLetterFailureColumns.
func (w *deadLetterWriter) write(ctx context.Context, dl *delivery) error {
	e := dl.msg.Event
	hj := e.rawHeaders // the row's own JSON: an exact copy
	if hj == nil || !json.Valid(hj) {
		headers := e.Headers
		if headers == nil {
			headers = map[string]string{}
		}
		hj, _ = json.Marshal(headers)
	}
	errs, _ := json.Marshal(dl.errs)
	last := ""
	if dl.err != nil {
		last = dl.err.Error()
	}
	first := dl.first
	if first.IsZero() {
		first = time.Now()
	}
	// The row's own values, infinities included (the zero time is a value
	// too: 0001-01-01).
	occurred, created := pgtime.ToPG(e.OccurredAt, e.OccurredAtInf), pgtime.ToPG(e.CreatedAt, e.CreatedAtInf)
	bo := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(5*time.Second)), ctx)
	return backoff.Retry(func() error {
		_, err := w.pool.Exec(ctx, w.stmt, e.ID, e.AggregateType, e.AggregateID, e.EventType, e.SchemaVersion,
			e.Payload, e.ContentType, string(hj), e.TenantID, occurred, created, dl.route.Name, dl.route.Sink,
			dl.msg.Destination, dl.msg.Attempt, last, string(errs), first, time.Now())
		if err != nil && ctx.Err() == nil {
			w.logger.Error("writing dead letter failed; retrying", "event_id", e.ID.String(), "route", dl.route.Name, "error", err)
			return fmt.Errorf("dead letter: %w", err)
		}
		return err
	}, bo)
}
