package dlq

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// ReplayOptions tune RequestReplay.
type ReplayOptions struct {
	// Again also requests rows that were replayed already.
	Again bool
	// DryRun reports what would be requested and changes nothing.
	DryRun bool
}

// ReplayResult says what RequestReplay did (or, with DryRun, would do).
type ReplayResult struct {
	// Requested are the rows now requested for replay, lowest id first.
	Requested []Letter `json:"requested"`
	// InProgress are rows a replay was already working on (requested or
	// delivering): they were not requested again.
	InProgress []Letter `json:"in_progress"`
	// Replayed are rows replayed already, left alone because Again was not set.
	Replayed []Letter `json:"replayed"`
	DryRun   bool     `json:"dry_run"`
}

// IDs returns the ids of the requested rows.
func (r *ReplayResult) IDs() []int64 { return ids(r.Requested) }

func ids(ls []Letter) []int64 {
	out := make([]int64, len(ls))
	for i, l := range ls {
		out[i] = l.ID
	}
	return out
}

// RequestReplay asks the active relay to deliver the selected dead letters
// again, each to its own route only, with its event id.
//
// Rows in status none or failed (and replayed, with Again) become requested in
// one UPDATE; rows a replay is already working on are reported in InProgress
// and left alone, so two operators replaying at once never send a row twice.
// When f selects by ids and one does not exist, RequestReplay returns a
// *NotFoundError and changes nothing.
func (s *Store) RequestReplay(ctx context.Context, f Filter, opts ReplayOptions) (*ReplayResult, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if f.Status != "" {
		return nil, badFilter("a replay selects rows by their replay status itself; drop the status filter")
	}
	eligible := []Status{StatusNone, StatusFailed}
	if opts.Again {
		eligible = append(eligible, StatusReplayed)
	}
	res := &ReplayResult{DryRun: opts.DryRun, Requested: []Letter{}, InProgress: []Letter{}, Replayed: []Letter{}}
	classify := func(ls []Letter) {
		for _, l := range ls {
			switch {
			case l.ReplayStatus.InProgress():
				res.InProgress = append(res.InProgress, l)
			case l.ReplayStatus == StatusReplayed:
				res.Replayed = append(res.Replayed, l)
			}
		}
	}
	where, args := f.where()

	if opts.DryRun {
		// List checks the ids.
		all, err := s.List(ctx, Filter{IDs: f.IDs, EventID: f.EventID, Route: f.Route, EventType: f.EventType,
			AggregateType: f.AggregateType, AggregateID: f.AggregateID, Since: f.Since, Until: f.Until})
		if err != nil {
			return nil, err
		}
		var skipped []Letter
		for _, l := range all {
			if slices.Contains(eligible, l.ReplayStatus) {
				if f.Limit == 0 || len(res.Requested) < f.Limit {
					res.Requested = append(res.Requested, l)
				}
			} else if f.Limit == 0 || len(skipped) < f.Limit {
				skipped = append(skipped, l)
			}
		}
		classify(skipped)
		return res, nil
	}

	tx, err := s.db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("dlq: replay: %w", err)
	}
	defer tx.Rollback(context.Background())
	if err := s.checkIDs(ctx, tx, f.IDs); err != nil {
		return nil, err
	}
	// The one statement that requests the replay: the status check in its WHERE
	// clause is re-evaluated on a row another session changed meanwhile.
	in := statusList(eligible)
	q := `UPDATE ` + s.table + ` SET replay_status = ` + statusLit(StatusRequested) + `, replay_requested_at = now()
	WHERE ` + where + ` AND replay_status IN ` + in
	if f.Limit > 0 {
		q += ` AND id IN (SELECT id FROM ` + s.table + ` WHERE ` + where + ` AND replay_status IN ` + in +
			fmt.Sprintf(` ORDER BY id LIMIT %d)`, f.Limit)
	}
	q += ` RETURNING ` + summaryCols
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("dlq: replay: %w", err)
	}
	requested, err := collectSummaries(rows)
	if err != nil {
		return nil, fmt.Errorf("dlq: replay: %w", err)
	}
	sortByID(requested)
	res.Requested = append(res.Requested, requested...)

	q = `SELECT ` + summaryCols + ` FROM ` + s.table + ` WHERE ` + where + ` AND replay_status NOT IN ` + in +
		fmt.Sprintf(` AND NOT (id = ANY($%d)) ORDER BY id`, len(args)+1)
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err = tx.Query(ctx, q, append(args, res.IDs())...)
	if err != nil {
		return nil, fmt.Errorf("dlq: replay: %w", err)
	}
	skipped, err := collectSummaries(rows)
	if err != nil {
		return nil, fmt.Errorf("dlq: replay: %w", err)
	}
	classify(skipped)
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("dlq: replay: commit: %w", err)
	}
	return res, nil
}

// checkIDs returns a *NotFoundError naming the ids that do not exist.
func (s *Store) checkIDs(ctx context.Context, db DB, want []int64) error {
	if len(want) == 0 {
		return nil
	}
	missing, err := missingIDs(ctx, db, s.table, want)
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	if len(missing) > 0 {
		return &NotFoundError{IDs: missing}
	}
	return nil
}

// statusList renders statuses (constants, never user input) as an SQL list.
func statusList(ss []Status) string {
	out := "("
	for i, s := range ss {
		if i > 0 {
			out += ", "
		}
		out += statusLit(s)
	}
	return out + ")"
}

// statusLit renders a status (a constant, never user input) as an SQL literal.
func statusLit(s Status) string { return "'" + string(s) + "'" }

// Outcome is how one requested replay ended: the row as it was then.
type Outcome struct {
	Letter
	// Gone is set when the row was deleted (purged) while waiting.
	Gone bool `json:"gone,omitempty"`
}

// Failed reports whether the replay did not deliver the event.
func (o *Outcome) Failed() bool { return o.Gone || o.ReplayStatus != StatusReplayed }

// WaitOptions tune Wait.
type WaitOptions struct {
	// Poll is how often the rows are read. Defaults to 250ms.
	Poll time.Duration
	// OnOutcome, when set, is called with each outcome as soon as it is seen.
	OnOutcome func(Outcome)
}

// WaitError is returned by Wait when ctx ends before every replay did.
type WaitError struct {
	// Pending are the rows still requested or being delivered.
	Pending []Letter
	Err     error
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("%d replays not finished (ids %s): %v", len(e.Pending), JoinIDs(ids(e.Pending)), e.Err)
}

func (e *WaitError) Unwrap() error { return e.Err }

// Wait polls the rows with the given ids until each is replayed or failed and
// returns the outcomes in the order they were seen. When ctx ends first it
// returns the outcomes seen so far and a *WaitError.
func (s *Store) Wait(ctx context.Context, want []int64, opts *WaitOptions) ([]Outcome, error) {
	if opts == nil {
		opts = &WaitOptions{}
	}
	poll := opts.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	pending := slices.Clone(want)
	var outcomes []Outcome
	var last []Letter
	t := time.NewTimer(0)
	defer t.Stop()
	for len(pending) > 0 {
		select {
		case <-ctx.Done():
			return outcomes, s.waitError(ctx, pending, last)
		case <-t.C:
		}
		var err error
		last, err = s.summaries(ctx, pending)
		if err != nil {
			if ctx.Err() != nil {
				return outcomes, s.waitError(ctx, pending, last)
			}
			return outcomes, fmt.Errorf("dlq: wait: %w", err)
		}
		seen := map[int64]bool{}
		var still []int64
		var stillRows []Letter
		emit := func(o Outcome) {
			outcomes = append(outcomes, o)
			if opts.OnOutcome != nil {
				opts.OnOutcome(o)
			}
		}
		for _, l := range last {
			seen[l.ID] = true
			if l.ReplayStatus.Finished() {
				emit(Outcome{Letter: l})
			} else {
				still = append(still, l.ID)
				stillRows = append(stillRows, l)
			}
		}
		for _, id := range pending {
			if !seen[id] {
				emit(Outcome{Letter: Letter{ID: id}, Gone: true})
			}
		}
		pending, last = still, stillRows
		t.Reset(poll)
	}
	return outcomes, nil
}

// waitError is Wait's error when ctx ends with pending still unfinished. When
// ctx ended before any poll completed (last is nil), it looks the rows up once
// more, briefly, so that the error names them; failing that, by id only.
func (s *Store) waitError(ctx context.Context, pending []int64, last []Letter) *WaitError {
	if last == nil && len(pending) > 0 {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		rows, err := s.summaries(lctx, pending)
		if err != nil {
			for _, id := range pending {
				last = append(last, Letter{ID: id})
			}
		}
		for _, l := range rows {
			if !l.ReplayStatus.Finished() {
				last = append(last, l)
			}
		}
	}
	return &WaitError{Pending: last, Err: ctx.Err()}
}

// summaries reads the rows of ids, in id order.
func (s *Store) summaries(ctx context.Context, ids []int64) ([]Letter, error) {
	rows, err := s.db.Query(ctx, `SELECT `+summaryCols+` FROM `+s.table+` WHERE id = ANY($1) ORDER BY id`, ids)
	if err != nil {
		return nil, err
	}
	return collectSummaries(rows)
}
