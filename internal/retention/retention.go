// Package retention deletes delivered rows from the outbox events table in
// small batches, for `outbox prune` (and a relay-side schedule later).
//
// Each batch is one short DELETE statement in its own transaction, so it holds
// row locks on the rows it deletes only, for as long as the statement runs,
// and the table lock it takes (ROW EXCLUSIVE) conflicts with neither the
// writers' inserts nor the relay's updates. It needs the SELECT and DELETE
// privileges on the table.
package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// DB is what Prune needs: a *pgxpool.Pool or a *pgx.Conn.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Options configure Prune.
type Options struct {
	// Schema holds the events table. Defaults to "outbox".
	Schema string
	// Before is the cutoff: delivered rows created before it are deleted. Required.
	Before time.Time
	// BatchSize is the most rows one statement deletes. Defaults to 1000.
	BatchSize int
	// Pause is slept between batches, to leave the server room. Defaults to none.
	Pause time.Duration
	// DryRun counts the rows that would be deleted and deletes nothing.
	DryRun bool
	// OnBatch, when set, is called after each batch.
	OnBatch func(Batch)
}

// Batch is one DELETE statement.
type Batch struct {
	Rows     int64
	Duration time.Duration
}

// Result sums up a Prune.
type Result struct {
	// Deleted counts the rows deleted (or, with DryRun, that would be).
	Deleted int64 `json:"deleted"`
	// Batches counts the DELETE statements.
	Batches int `json:"batches"`
	// MaxBatch is the longest batch statement.
	MaxBatch time.Duration `json:"-"`
	// Before is the cutoff.
	Before time.Time `json:"before"`
	DryRun bool      `json:"dry_run"`
}

// Prune deletes delivered rows created before opts.Before in batches until
// none are left or ctx ends. On an error it returns what it did so far.
func Prune(ctx context.Context, db DB, opts Options) (*Result, error) {
	if opts.Schema == "" {
		opts.Schema = "outbox"
	}
	if err := outboxschema.ValidateName("schema", opts.Schema); err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	if opts.Before.IsZero() {
		return nil, errors.New("retention: Before is required")
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = 1000
	}
	if opts.BatchSize < 0 {
		return nil, errors.New("retention: BatchSize must be positive")
	}
	table := outboxschema.Quote(opts.Schema) + ".events"
	res := &Result{Before: opts.Before, DryRun: opts.DryRun}
	if opts.DryRun {
		err := db.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE created_at < $1 AND delivered_at IS NOT NULL`, opts.Before).Scan(&res.Deleted)
		if err != nil {
			return nil, fmt.Errorf("retention: count: %w", err)
		}
		return res, nil
	}
	// The DELETE finds the picked rows by ctid (a TID scan). A row updated
	// between the pick and the delete has a new ctid and is left alone, which
	// is safe; nothing updates a delivered row anyway. No FOR UPDATE: it would
	// need the UPDATE privilege, and SELECT and DELETE are enough.
	q := `DELETE FROM ` + table + ` WHERE ctid = ANY(ARRAY(
	  SELECT ctid FROM ` + table + ` WHERE created_at < $1 AND delivered_at IS NOT NULL LIMIT $2))`
	for {
		start := time.Now()
		tag, err := db.Exec(ctx, q, opts.Before, opts.BatchSize)
		dur := time.Since(start)
		if err != nil {
			return res, fmt.Errorf("retention: delete: %w", err)
		}
		res.Batches++
		res.Deleted += tag.RowsAffected()
		res.MaxBatch = max(res.MaxBatch, dur)
		if opts.OnBatch != nil {
			opts.OnBatch(Batch{Rows: tag.RowsAffected(), Duration: dur})
		}
		if tag.RowsAffected() < int64(opts.BatchSize) {
			return res, nil
		}
		if opts.Pause > 0 {
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(opts.Pause):
			}
		}
	}
}
