package relay

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/internal/pgoutput"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// snapshotPageRows is how many rows of a new slot's snapshot are read at a time.
const snapshotPageRows = 1000

// deliverSnapshot feeds every undelivered row visible in a new slot's
// snapshot (tx holds it) into the pipeline, a page at a time, in the
// stream's order as far as the table can tell it: by seq, the sequence value
// each row took when it was inserted (insertion order within a transaction;
// commit order across the transactions of one key when writers serialize per
// aggregate, as they must for the stream's order to mean anything). See
// migrations/sql/00002. The rows count as one transaction ending at 0, before
// the stream's first; once all are handled, relay_state.snapshot_pending
// becomes false, and a relay that stops before that takes a new snapshot on
// its next start.
func (s *session) deliverSnapshot(ctx context.Context, tx pgx.Tx, p *pipeline) error {
	db := s.cfg.Database
	txn := p.pos.begin()
	txn.whenDone(s.snapshotDelivered)
	q := `DECLARE backfill NO SCROLL CURSOR FOR SELECT ` + outboxschema.EventColumns + `
		FROM ` + s.table + ` WHERE delivered_at IS NULL ORDER BY seq`
	if _, err := tx.Exec(ctx, q); err != nil {
		return fmt.Errorf("snapshot of slot %s: read the undelivered rows: %w", db.Slot, err)
	}
	total := 0
	for {
		page, err := s.snapshotPage(ctx, tx, txn)
		if err != nil {
			return err
		}
		for _, it := range page {
			if err := p.submit(ctx, it, nil); err != nil {
				return err
			}
		}
		total += len(page)
		if len(page) < snapshotPageRows {
			break
		}
	}
	if err := p.handOff(ctx, nil); err != nil {
		return err
	}
	s.logger.Info("snapshot read", "slot", db.Slot, "undelivered_rows", total)
	txn.commit(0)
	return nil
}

// snapshotPage reads the next page of the snapshot's cursor, each row an
// item of txn. Binary results: the bytes pgoutput sends, decoded by the same
// code.
func (s *session) snapshotPage(ctx context.Context, tx pgx.Tx, txn *txn) ([]*item, error) {
	slot := s.cfg.Database.Slot
	rows, err := tx.Query(ctx, fmt.Sprintf("FETCH %d FROM backfill", snapshotPageRows), pgx.QueryResultFormats{pgx.BinaryFormatCode})
	if err != nil {
		return nil, fmt.Errorf("snapshot of slot %s: read the undelivered rows: %w", slot, err)
	}
	defer rows.Close()
	var page []*item
	var row pgoutput.Row
	for rows.Next() {
		if err := pgoutput.ScanResult(rows, 0, &row); err != nil {
			return nil, fmt.Errorf("snapshot of slot %s: %w", slot, err)
		}
		page = append(page, newItem(&row, txn))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("snapshot of slot %s: read the undelivered rows: %w", slot, err)
	}
	return page, nil
}

// snapshotDelivered records that every row of the slot's snapshot is
// handled: the next start resumes the slot instead of taking a new snapshot.
func (s *session) snapshotDelivered() {
	db := s.cfg.Database
	_, err := s.pool.Exec(context.Background(), `UPDATE `+outboxschema.Quote(db.Schema)+`.relay_state SET snapshot_pending = false, updated_at = now() WHERE slot = $1`, db.Slot)
	if err != nil {
		s.logger.Error("recording the snapshot as delivered failed; the next start delivers it again", "error", err)
		return
	}
	s.logger.Info("snapshot delivered", "slot", db.Slot)
}
