package relay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgxpool"

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
	table := outboxschema.Quote(schema) + ".dead_letters"
	// A replayed event that fails again returns to its row: attempts add up.
	// event_seq, the event's seq (replays follow it: replay.go), is read
	// from the event's row, which exists while its delivery is in flight.
	stmt := `INSERT INTO ` + table + ` AS d (` + outboxschema.DeadLetterEventColumns + `, ` + outboxschema.DeadLetterFailureColumns + `, ` + outboxschema.DeadLetterEventSeq + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULLIF($9, ''), $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
	  (SELECT seq FROM ` + outboxschema.Quote(schema) + `.events WHERE id = $1))
	ON CONFLICT (event_id, route) DO UPDATE SET
	  event_seq = coalesce(d.event_seq, EXCLUDED.event_seq),
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
//
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
