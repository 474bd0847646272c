package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// catchup: after a restart the slot sends again every transaction after its
// confirmed position, including events the previous session had already
// delivered and marked but not yet confirmed. While resuming, the stream
// looks their rows up, a batch at a time, and skips those already marked
// delivered (with on_delivered: mark; a deleted row cannot be told from one
// not yet visible, so delete mode skips nothing). Catch-up ends with the
// first batch in which no row was marked. It cuts the duplicates a crash
// causes; it is not needed for correctness.
type catchup struct {
	buf     []*item // read, counted in their transactions, not yet submitted
	skipped int
}

const (
	catchupBatch  = 500
	catchupLinger = 10 * time.Millisecond
)

// holdForCatchup holds it (counted in its transaction, which it holds open)
// until its batch is looked up.
func (st *stream) holdForCatchup(ctx context.Context, it *item) error {
	st.catchup.buf = append(st.catchup.buf, it)
	if len(st.catchup.buf) >= catchupBatch {
		return st.flushCatchup(ctx)
	}
	return nil
}

// flushCatchup looks the held batch up: rows already marked delivered are
// finished at once, the others submitted. A batch without any ends the
// catch-up.
func (st *stream) flushCatchup(ctx context.Context) error {
	c := st.catchup
	if len(c.buf) == 0 {
		return nil
	}
	marked, err := st.delivered(ctx, c.buf)
	if err != nil {
		return err
	}
	buf := c.buf
	c.buf = nil
	if len(marked) == 0 {
		st.catchup = nil
		st.s.logger.Info("resumed: caught up with what the previous session delivered", "skipped_already_delivered", c.skipped)
	}
	for _, it := range buf {
		if marked[[16]byte(it.ev.ID)] {
			c.skipped++
			it.txn.done()
			continue
		}
		if err := st.pipe.submit(ctx, it, st.keepalive); err != nil {
			// The rest stay counted and unfinished: the position cannot move
			// past them, and the next session reads them again.
			return err
		}
	}
	return st.pipe.handOff(ctx, st.keepalive)
}

// delivered returns the ids of items whose rows are marked delivered.
func (st *stream) delivered(ctx context.Context, items []*item) (map[[16]byte]bool, error) {
	ids := make([][16]byte, len(items)) // binary uuids, see marker.exec
	for i, it := range items {
		ids[i] = it.ev.ID
	}
	marked := map[[16]byte]bool{}
	rows, err := st.s.pool.Query(ctx, `SELECT id FROM `+st.s.table+` WHERE id = ANY($1) AND delivered_at IS NOT NULL`, ids)
	if err == nil {
		var id [16]byte
		_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
			marked[id] = true
			return nil
		})
	}
	if err != nil {
		return nil, fmt.Errorf("resume: look up delivered rows: %w", err)
	}
	return marked, nil
}
