package sdk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/outboxrelay/outbox/sdk/internal/dbx"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// Tx is the transaction an event is written in. It is one of:
//
//   - a pgx v5 pgx.Tx (or anything with its Exec method: *pgx.Conn,
//     *pgxpool.Conn, *pgxpool.Tx);
//   - a *sql.Tx of any database/sql driver (or anything with its ExecContext
//     method: *sql.Conn).
//
// Anything else makes Write return ErrUnsupportedTx. A pool or *sql.DB is
// accepted too, but then the event is written in a transaction of its own,
// which defeats the outbox: pass the business transaction.
type Tx any

// EventWriter writes events in the caller's transaction. [*Writer] writes to
// the database; outboxtest.Recorder records in memory for unit tests. Code
// that writes events can depend on this interface.
type EventWriter interface {
	Write(ctx context.Context, tx Tx, e *Event) error
	WriteBatch(ctx context.Context, tx Tx, events []Event) error
}

var _ EventWriter = (*Writer)(nil)

// Config configures a Writer. A nil *Config means all defaults.
type Config struct {
	// Schema is the schema holding the outbox tables. Defaults to "outbox".
	Schema string
	// MaxPayloadBytes is the largest payload accepted. Defaults to 1 MiB.
	// Brokers have limits of their own (Kafka's default message.max.bytes is
	// about 1 MB, NATS max_payload 1 MB): keep this below the smallest.
	MaxPayloadBytes int
	// MaxHeaderBytes is the largest size of an event's headers encoded as a
	// JSON object. Defaults to 64 KiB.
	MaxHeaderBytes int
	// Propagator captures the trace context from ctx into the headers.
	// Defaults to the W3C TraceContext propagator (traceparent, tracestate).
	Propagator propagation.TextMapPropagator
}

func (c *Config) withDefaults() (Config, error) {
	var cfg Config
	if c != nil {
		cfg = *c
	}
	cfg.Schema = cmp.Or(cfg.Schema, "outbox")
	cfg.MaxPayloadBytes = cmp.Or(cfg.MaxPayloadBytes, 1<<20)
	cfg.MaxHeaderBytes = cmp.Or(cfg.MaxHeaderBytes, 64<<10)
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	if err := outboxschema.ValidateName("Schema", cfg.Schema); err != nil {
		return cfg, fmt.Errorf("sdk: config: %w", err)
	}
	if cfg.MaxPayloadBytes < 0 {
		return cfg, fmt.Errorf("sdk: config: MaxPayloadBytes is %d, must be positive (0 means the default, 1 MiB)", cfg.MaxPayloadBytes)
	}
	if cfg.MaxHeaderBytes < 0 {
		return cfg, fmt.Errorf("sdk: config: MaxHeaderBytes is %d, must be positive (0 means the default, 64 KiB)", cfg.MaxHeaderBytes)
	}
	return cfg, nil
}

// Writer inserts events into the outbox table of one schema. It is safe for
// concurrent use and holds no connection: every call uses the transaction it
// is given.
type Writer struct {
	cfg        Config
	insertOne  string
	insertMany string
}

// New returns a Writer, or an error naming the Config field that is invalid.
func New(cfg *Config) (*Writer, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	table := outboxschema.Quote(c.Schema) + ".events"
	// The arguments of both statements follow cols, as prepare makes them.
	const cols = outboxschema.WrittenEventColumns
	return &Writer{
		cfg:       c,
		insertOne: "INSERT INTO " + table + " (" + cols + ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
		// One statement for the whole batch: the arrays are expanded in
		// order, so rows are inserted (and replicated) in slice order.
		insertMany: "INSERT INTO " + table + " (" + cols + ")" +
			" SELECT " + strings.Replace(cols, "headers", "headers::jsonb", 1) +
			" FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::text[], $9::text[], $10::timestamptz[])" +
			" AS e(" + cols + ")",
	}, nil
}

// Schema is the schema the Writer writes to.
func (w *Writer) Schema() string { return w.cfg.Schema }

// Write inserts e into the outbox table in tx, as exactly one statement.
//
// e is validated first; on a validation error (a [*ValidationError]) nothing
// is sent. On success Write sets e's empty ID, SchemaVersion, ContentType and
// OccurredAt to the values stored, and e.Headers to the stored headers (a new
// map, including the captured trace context; the caller's map is not changed).
//
// The event becomes visible to the relay when tx commits, and never if it
// rolls back.
func (w *Writer) Write(ctx context.Context, tx Tx, e *Event) error {
	if e == nil {
		return &ValidationError{Field: "event", Reason: "is nil", Err: ErrMissingField}
	}
	kind := dbx.ExecKind(tx)
	if kind == dbx.None {
		return fmt.Errorf("sdk: write: %w", dbx.UnsupportedError(tx))
	}
	r, err := w.prepare(w.capture(ctx), e, 0, false)
	if err != nil {
		return err
	}
	ev := &r.ev
	var tenant any
	if r.tenant != nil {
		tenant = *r.tenant
	}
	id := any(ev.ID)
	if kind == dbx.SQL {
		id = ev.ID.String()
	}
	if _, err := dbx.Exec(ctx, tx, w.insertOne,
		id, ev.AggregateType, ev.AggregateID, ev.EventType, ev.SchemaVersion,
		ev.Payload, ev.ContentType, r.headers, tenant, ev.OccurredAt,
	); err != nil {
		return fmt.Errorf("sdk: write %s event: %w", ev.EventType, err)
	}
	*e = *ev
	return nil
}

// WriteBatch inserts events into the outbox table in tx with one statement,
// in one round trip, in slice order. An empty slice writes nothing and sends
// nothing.
//
// Every event is validated first; if any is invalid WriteBatch returns all
// the validation errors (joined; each a [*ValidationError] with its Index) and
// sends nothing. On success each element's empty fields are set to the values
// stored, as for Write.
func (w *Writer) WriteBatch(ctx context.Context, tx Tx, events []Event) error {
	kind := dbx.ExecKind(tx)
	if kind == dbx.None {
		return fmt.Errorf("sdk: write batch: %w", dbx.UnsupportedError(tx))
	}
	if len(events) == 0 {
		return nil
	}
	rows, err := w.prepareBatch(ctx, events)
	if err != nil {
		return err
	}
	n := len(rows)
	var args []any
	if kind == dbx.Pgx {
		// Ids go as text: every pgx exec mode can bind []string, while
		// QueryExecModeExec and SimpleProtocol cannot bind []uuid.UUID.
		ids := make([]string, n)
		aggTypes, aggIDs, types, versions, cts, headers := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		payloads := make([][]byte, n)
		tenants := make([]*string, n)
		occurred := make([]time.Time, n)
		for i := range rows {
			ev := &rows[i].ev
			ids[i], aggTypes[i], aggIDs[i], types[i], versions[i] = ev.ID.String(), ev.AggregateType, ev.AggregateID, ev.EventType, ev.SchemaVersion
			payloads[i], cts[i], headers[i], tenants[i], occurred[i] = ev.Payload, ev.ContentType, rows[i].headers, rows[i].tenant, ev.OccurredAt
		}
		args = []any{ids, aggTypes, aggIDs, types, versions, payloads, cts, headers, tenants, occurred}
	} else {
		// database/sql drivers cannot all bind Go slices: send array
		// literals as text, which every driver passes through.
		text := func(f func(r *row) string) string {
			return dbx.TextArray(n, func(i int) (string, bool) { return f(&rows[i]), false })
		}
		payloads := make([][]byte, n)
		occurred := make([]time.Time, n)
		for i := range rows {
			payloads[i], occurred[i] = rows[i].ev.Payload, rows[i].ev.OccurredAt
		}
		args = []any{
			text(func(r *row) string { return r.ev.ID.String() }),
			text(func(r *row) string { return r.ev.AggregateType }),
			text(func(r *row) string { return r.ev.AggregateID }),
			text(func(r *row) string { return r.ev.EventType }),
			text(func(r *row) string { return r.ev.SchemaVersion }),
			dbx.ByteaArray(payloads),
			text(func(r *row) string { return r.ev.ContentType }),
			text(func(r *row) string { return r.headers }),
			dbx.TextArray(n, func(i int) (string, bool) {
				if t := rows[i].tenant; t != nil {
					return *t, false
				}
				return "", true
			}),
			dbx.TimeArray(occurred),
		}
	}
	if _, err := dbx.Exec(ctx, tx, w.insertMany, args...); err != nil {
		return fmt.Errorf("sdk: write batch of %d events: %w", n, err)
	}
	for i := range rows {
		events[i] = rows[i].ev
	}
	return nil
}

// Prepare validates e and returns it as Write would store it (defaults
// applied, trace context captured from ctx into its headers) without writing
// anything. Test doubles such as outboxtest.Recorder use it to behave exactly
// like Write.
func (w *Writer) Prepare(ctx context.Context, e Event) (Event, error) {
	r, err := w.prepare(w.capture(ctx), &e, 0, false)
	return r.ev, err
}

// PrepareBatch is Prepare for a batch, with WriteBatch's errors.
func (w *Writer) PrepareBatch(ctx context.Context, events []Event) ([]Event, error) {
	rows, err := w.prepareBatch(ctx, events)
	if err != nil {
		return nil, err
	}
	out := make([]Event, len(rows))
	for i := range rows {
		out[i] = rows[i].ev
	}
	return out, nil
}

func (w *Writer) prepareBatch(ctx context.Context, events []Event) ([]row, error) {
	tr := w.capture(ctx)
	rows := make([]row, len(events))
	var errs []error
	total := 0
	for i := range events {
		r, err := w.prepare(tr, &events[i], i, true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rows[i] = r
		total += len(r.ev.Payload) + len(r.headers)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if total > MaxBatchBytes {
		return nil, &ValidationError{Field: "batch", Reason: fmt.Sprintf("%d events carry %d bytes, more than the %d one statement may carry; split the batch", len(events), total, MaxBatchBytes), Err: ErrBatchTooLarge, batch: true}
	}
	return rows, nil
}

// capture returns the trace context headers the propagator finds in ctx.
func (w *Writer) capture(ctx context.Context) trace {
	c := propagation.MapCarrier{}
	w.cfg.Propagator.Inject(ctx, c)
	return trace(c)
}
