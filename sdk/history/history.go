// Package history loads one aggregate's events from the outbox table in order
// and folds them into state: the event-sourcing "rebuild".
//
// Order is insertion order: the events table's seq column, a number taken
// when each row is inserted (the same order the relay's snapshot uses). It is
// exact within one transaction, also for rows inserted by plain SQL (whose
// database-made ids are not monotonic), and across transactions it is
// commit order when one aggregate's writers serialize (lock the aggregate's
// row before writing its events). See docs/sdk.md, also for retention:
// history reads only
// the rows still in the table, so `outbox prune` and `on_delivered: delete`
// must be off for aggregates whose history is rebuilt.
//
// Loading pages through the events with keyset pagination on
// (aggregate_type, aggregate_id, seq); create the supporting index
// once with [CreateIndex] (it is not part of the default migrations because
// every writer would pay for it).
package history

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/internal/dbx"
	"github.com/outboxrelay/outbox/sdk/internal/eventrow"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// IndexName is the name of the index history reads through.
const IndexName = "events_aggregate_seq_idx"

// IndexSQL returns the statement that creates the history index on the
// events table of schema, CONCURRENTLY (without blocking writers) when asked.
func IndexSQL(schema string, concurrently bool) string {
	c := ""
	if concurrently {
		c = "CONCURRENTLY "
	}
	return "CREATE INDEX " + c + "IF NOT EXISTS " + IndexName + " ON " + outboxschema.Quote(schema) +
		".events (aggregate_type, aggregate_id, seq)"
}

// CreateIndex creates the history index on schema's events table with CREATE
// INDEX CONCURRENTLY, so writers are not blocked while it builds. db must be a
// pool or connection, not a transaction (pgx or database/sql). It fails if a
// previous concurrent build left an invalid index behind (drop it and retry).
//
// The index costs writers: in BenchmarkHistoryIndexCost WriteBatch of 100
// events was about 25% slower with it.
func CreateIndex(ctx context.Context, db sdk.Tx, schema string) error {
	if err := outboxschema.ValidateName("schema", schema); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	if _, err := dbx.Exec(ctx, db, IndexSQL(schema, true)); err != nil {
		return fmt.Errorf("history: create index: %w", err)
	}
	valid := true
	err := dbx.Query(ctx, db,
		"SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
		[]any{schema, IndexName}, func(scan func(...any) error) error { return scan(&valid) })
	if err != nil {
		return fmt.Errorf("history: check index: %w", err)
	}
	if !valid {
		return fmt.Errorf("history: index %s.%s is invalid (an interrupted concurrent build): DROP INDEX %s.%s and run again", schema, IndexName, outboxschema.Quote(schema), IndexName)
	}
	return nil
}

// Config configures a Loader. A nil *Config means all defaults.
type Config struct {
	// Schema is the schema holding the outbox tables. Defaults to "outbox".
	Schema string
	// PageSize is how many events one query reads. Defaults to 500.
	PageSize int
}

// Loader reads aggregates' events. It is safe for concurrent use.
type Loader struct {
	pageSize int
	first    string // the first page
	query    string // a page after a cursor
}

// New returns a Loader, or an error naming the invalid Config field.
func New(cfg *Config) (*Loader, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.Schema = cmp.Or(c.Schema, "outbox")
	c.PageSize = cmp.Or(c.PageSize, 500)
	if err := outboxschema.ValidateName("Schema", c.Schema); err != nil {
		return nil, fmt.Errorf("history: config: %w", err)
	}
	if c.PageSize < 1 {
		return nil, fmt.Errorf("history: config: PageSize is %d, must be positive (0 means the default, 500)", c.PageSize)
	}
	from := "SELECT " + eventrow.Columns + " FROM " + outboxschema.Quote(c.Schema) + ".events WHERE aggregate_type = $1 AND aggregate_id = $2"
	return &Loader{
		pageSize: c.PageSize,
		first:    from + " ORDER BY seq LIMIT $3",
		query:    from + " AND seq > $3 ORDER BY seq LIMIT $4",
	}, nil
}

// Record is one stored event and its position in the aggregate's history.
type Record struct {
	sdk.Event
	// CreatedAt is the start time of the transaction that wrote the event.
	CreatedAt time.Time
	// OccurredAtInf and CreatedAtInf are pgtype.Infinity or
	// pgtype.NegativeInfinity when the row holds 'infinity' or '-infinity'
	// (a row written by hand; time.Time has no infinity, so OccurredAt or
	// CreatedAt is then the zero time), and pgtype.Finite otherwise.
	// Finite times are in UTC, of any year PostgreSQL stores.
	OccurredAtInf, CreatedAtInf pgtype.InfinityModifier
	seq                         int64
}

// Cursor is a position in an aggregate's history: the events after it are
// those inserted after it (a greater seq, the events table's insertion-order
// column). The zero Cursor is the beginning.
type Cursor struct {
	Seq int64
}

// IsZero reports whether c is the beginning.
func (c Cursor) IsZero() bool { return c == Cursor{} }

// Cursor returns the position just after r. Store it with a snapshot of the
// state folded so far and pass it to Load to continue from there.
func (r Record) Cursor() Cursor {
	return Cursor{Seq: r.seq}
}

// Load calls fn with every event of the aggregate after the cursor, in
// insertion (seq) order, reading PageSize events per query. fn runs between
// queries, never while rows are open, so it may use db itself. An error from
// fn stops the load and is returned as is.
//
// db is a pgx or database/sql handle. Each page is a separate query: run Load
// in a REPEATABLE READ transaction for one consistent view of the history.
func (l *Loader) Load(ctx context.Context, db sdk.Tx, aggregateType, aggregateID string, after Cursor, fn func(Record) error) error {
	page := make([]Record, 0, l.pageSize)
	for {
		page = page[:0]
		query, args := l.query, []any{aggregateType, aggregateID, after.Seq, l.pageSize}
		if after.IsZero() {
			query, args = l.first, []any{aggregateType, aggregateID, l.pageSize}
		}
		err := dbx.Query(ctx, db, query, args,
			func(scan func(...any) error) error {
				r, err := eventrow.Scan(scan)
				if err != nil {
					return err
				}
				page = append(page, Record{Event: r.Event, CreatedAt: r.CreatedAt, OccurredAtInf: r.OccurredAtInf, CreatedAtInf: r.CreatedAtInf, seq: r.Seq})
				return nil
			})
		if err != nil {
			return fmt.Errorf("history: load %s %s: %w", aggregateType, aggregateID, err)
		}
		for _, r := range page {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(page) < l.pageSize {
			return nil
		}
		after = page[len(page)-1].Cursor()
	}
}

// Fold loads the aggregate's events from the beginning and folds them into
// state with apply, returning the final state.
func Fold[S any](ctx context.Context, l *Loader, db sdk.Tx, aggregateType, aggregateID string, state S, apply func(S, Record) (S, error)) (S, error) {
	return FoldFrom(ctx, l, db, aggregateType, aggregateID, Cursor{}, state, apply)
}

// FoldFrom is Fold from a snapshot: state is the state folded up to after.
func FoldFrom[S any](ctx context.Context, l *Loader, db sdk.Tx, aggregateType, aggregateID string, after Cursor, state S, apply func(S, Record) (S, error)) (S, error) {
	err := l.Load(ctx, db, aggregateType, aggregateID, after, func(r Record) error {
		var err error
		state, err = apply(state, r)
		if err != nil {
			return fmt.Errorf("history: apply %s %s: %w", r.EventType, r.ID, err)
		}
		return nil
	})
	return state, err
}
