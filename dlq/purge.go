package dlq

import (
	"context"
	"errors"
	"fmt"
)

// PurgeOptions tune Purge.
type PurgeOptions struct {
	// DryRun reports what would be deleted and changes nothing.
	DryRun bool
	// Max, when positive, is the most rows Purge may delete: when more match,
	// it deletes nothing and returns a *TooManyError. It is how a command line
	// asks for confirmation before a bulk delete.
	Max int
}

// PurgeResult says what Purge deleted (or, with DryRun, would delete).
type PurgeResult struct {
	// Deleted are the rows deleted, lowest id first.
	Deleted []Letter `json:"deleted"`
	// Skipped are rows a replay is working on (requested or delivering): they
	// are kept; purge them once the replay has finished.
	Skipped []Letter `json:"skipped"`
	DryRun  bool     `json:"dry_run"`
}

// TooManyError is returned by Purge when more rows match than PurgeOptions.Max.
type TooManyError struct{ Count, Max int }

func (e *TooManyError) Error() string {
	return fmt.Sprintf("the selection matches %d dead letters, more than %d", e.Count, e.Max)
}

// ErrTooMany matches every *TooManyError.
var ErrTooMany = errors.New("too many dead letters selected")

// Is reports TooManyError as ErrTooMany.
func (e *TooManyError) Is(target error) bool { return target == ErrTooMany }

// Purge deletes the selected dead letters in one transaction, keeping rows a
// replay is working on. When f selects by ids and one does not exist, or more
// rows match than opts.Max, it deletes nothing.
func (s *Store) Purge(ctx context.Context, f Filter, opts PurgeOptions) (*PurgeResult, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	res := &PurgeResult{DryRun: opts.DryRun, Deleted: []Letter{}, Skipped: []Letter{}}
	where, args := f.where()
	busy := statusList([]Status{StatusRequested, StatusDelivering})

	tx, err := s.db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("dlq: purge: %w", err)
	}
	defer tx.Rollback(context.Background())
	if err := s.checkIDs(ctx, tx, f.IDs); err != nil {
		return nil, err
	}
	verb := `DELETE FROM ` + s.table
	if opts.DryRun {
		verb = `SELECT ` + summaryCols + ` FROM ` + s.table
	}
	q := verb + ` WHERE ` + where + ` AND replay_status NOT IN ` + busy
	if f.Limit > 0 {
		q += ` AND id IN (SELECT id FROM ` + s.table + ` WHERE ` + where + ` AND replay_status NOT IN ` + busy +
			fmt.Sprintf(` ORDER BY id LIMIT %d)`, f.Limit)
	}
	if opts.DryRun {
		q += ` ORDER BY id`
	} else {
		q += ` RETURNING ` + summaryCols
	}
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("dlq: purge: %w", err)
	}
	deleted, err := collectSummaries(rows)
	if err != nil {
		return nil, fmt.Errorf("dlq: purge: %w", err)
	}
	if !opts.DryRun && opts.Max > 0 && len(deleted) > opts.Max {
		return nil, &TooManyError{Count: len(deleted), Max: opts.Max}
	}
	sortByID(deleted)
	res.Deleted = append(res.Deleted, deleted...)

	q = `SELECT ` + summaryCols + ` FROM ` + s.table + ` WHERE ` + where + ` AND replay_status IN ` + busy + ` ORDER BY id`
	rows, err = tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("dlq: purge: %w", err)
	}
	if res.Skipped, err = collectSummaries(rows); err != nil {
		return nil, fmt.Errorf("dlq: purge: %w", err)
	}
	if res.Skipped == nil {
		res.Skipped = []Letter{}
	}
	if opts.DryRun {
		return res, nil
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("dlq: purge: commit: %w", err)
	}
	return res, nil
}
