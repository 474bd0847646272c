package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// slot is the session's replication connection and where its stream starts.
type slot struct {
	conn *pgconn.PgConn
	buf  *bufio.Reader // the connection's read buffer
	// start is the slot's confirmed position, or its consistent point when
	// just created.
	start pglogrepl.LSN
	// snapshot is set when the slot was just created: the transaction that
	// holds the slot's exported snapshot, whose undelivered rows must be
	// delivered before the stream (snapshot.go).
	snapshot pgx.Tx
}

// replReadBuffer is the replication connection's read buffer.
const replReadBuffer = 256 << 10

// openSlot connects for replication and makes sure the slot exists and is
// usable: it resumes a healthy slot, and drops and recreates one that lost
// its WAL or whose snapshot was never fully delivered.
func (s *session) openSlot(ctx context.Context) (*slot, error) {
	sl, err := s.replicationConn(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.prepareSlot(ctx, sl); err != nil {
		sl.conn.Close(context.Background())
		return nil, err
	}
	return sl, nil
}

// replicationConn opens the replication connection.
func (s *session) replicationConn(ctx context.Context) (*slot, error) {
	db := s.cfg.Database
	rcfg, err := pgconn.ParseConfig(db.URL)
	if err != nil {
		return nil, fatal(fmt.Errorf("database.url: %v", err))
	}
	rcfg.RuntimeParams["replication"] = "database"
	setLiveness(rcfg.RuntimeParams, db.FailoverTimeout.D())
	rcfg.RuntimeParams["application_name"] = "outbox-relay"
	sl := &slot{}
	// pgproto3 reads at most 8 KiB per system call; a backlog streams at
	// 100+ MB/s, so read through a larger buffer (one read takes what the
	// socket holds).
	rcfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		sl.buf = bufio.NewReaderSize(r, replReadBuffer)
		return pgproto3.NewFrontend(sl.buf, w)
	}
	if linger := s.cfg.Delivery.ReadLinger.D(); linger > 0 {
		dial := rcfg.DialFunc
		rcfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return newLingerConn(c, linger), nil
		}
	}
	sl.conn, err = pgconn.ConnectConfig(ctx, rcfg)
	if err != nil {
		if isFatalPgError(err) {
			return nil, fatal(fmt.Errorf("replication connection: %w (the relay's role needs the REPLICATION attribute)", err))
		}
		return nil, fmt.Errorf("replication connection: %w", err)
	}
	return sl, nil
}

// slotState is what the database says about the slot.
type slotState struct {
	exists          bool
	plugin          string
	walStatus       string
	confirmed       pglogrepl.LSN
	activePID       *int32
	snapshotPending bool // relay_state: a relay created the slot and has not delivered its snapshot
}

// readSlotState reads the slot from pg_replication_slots and relay_state.
func (s *session) readSlotState(ctx context.Context) (slotState, error) {
	db := s.cfg.Database
	var st slotState
	err := s.pool.QueryRow(ctx, `SELECT plugin, coalesce(wal_status, ''), coalesce(confirmed_flush_lsn, '0/0'::pg_lsn)::text, active_pid
		FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical'`, db.Slot).Scan(&st.plugin, &st.walStatus, &st.confirmed, &st.activePID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("read slot: %w", err)
	default:
		st.exists = true
	}
	// Whether a relay created the slot and stopped before it delivered the
	// slot's snapshot decides between resuming and a new snapshot: an error
	// here must not read as "no".
	err = s.pool.QueryRow(ctx, `SELECT snapshot_pending FROM `+outboxschema.Quote(db.Schema)+`.relay_state WHERE slot = $1`, db.Slot).Scan(&st.snapshotPending)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// recordHolder wrote the row a moment ago; someone deleted it
		// since. Nothing then says the snapshot was delivered: take a new
		// one (rows already marked delivered are not sent again).
		s.logger.Warn("the slot's row in relay_state is gone; taking a new snapshot rather than resuming a slot whose snapshot may not have been delivered", "slot", db.Slot)
		st.snapshotPending = true
	case err != nil:
		return st, fmt.Errorf("read relay_state.snapshot_pending of slot %s (without it the relay cannot tell whether the slot's snapshot was delivered, so it does not resume the slot): %w", db.Slot, err)
	}
	return st, nil
}

// prepareSlot resumes the slot, or creates it (with a snapshot) when it is
// missing or unusable; see openSlot.
func (s *session) prepareSlot(ctx context.Context, sl *slot) error {
	db := s.cfg.Database
	st, err := s.readSlotState(ctx)
	if err != nil {
		return err
	}
	if st.exists && st.plugin != "pgoutput" {
		return fatal(fmt.Errorf("%w: slot %s uses %q; the relay needs pgoutput: pick another database.slot or drop that slot", ErrSlotPlugin, db.Slot, st.plugin))
	}
	dropped := false // this relay dropped it, as unusable
	if st.exists && (st.walStatus == "lost" || st.snapshotPending) {
		if err := s.dropUnusableSlot(ctx, st); err != nil {
			return err
		}
		st.exists, dropped = false, true
	}
	if st.exists {
		if st.activePID != nil {
			// We hold the leader lock, so the walsender still using the slot is a
			// leftover of our own earlier connection (a killed relay).
			s.logger.Warn("replication slot is held by a stale connection; terminating it", "slot", db.Slot, "pid", *st.activePID)
			if _, err := s.pool.Exec(ctx, "SELECT pg_terminate_backend($1)", *st.activePID); err != nil {
				return fmt.Errorf("end the stale connection (pid %d) holding slot %s: %w", *st.activePID, db.Slot, err)
			}
			if err := s.waitSlotFree(ctx); err != nil {
				return err
			}
		}
		s.logger.Info("resuming from replication slot", "slot", db.Slot, "confirmed", st.confirmed.String())
		sl.start = st.confirmed
		return nil
	}
	if s.ranBefore && !dropped {
		s.logger.Error("replication slot is gone (dropped, or lost in a failover); recreating it and delivering every undelivered row from a snapshot",
			"slot", db.Slot)
	}
	return s.createSlot(ctx, sl)
}

// dropUnusableSlot drops a slot that lost its WAL or whose snapshot was never
// fully delivered.
func (s *session) dropUnusableSlot(ctx context.Context, st slotState) error {
	db := s.cfg.Database
	reason := "its WAL was removed (wal_status = lost, see max_slot_wal_keep_size)"
	if st.snapshotPending {
		reason = "a relay stopped before it finished delivering the slot's snapshot"
	}
	s.logger.Error("replication slot is unusable; dropping and recreating it, then delivering every undelivered row", "slot", db.Slot, "reason", reason)
	if st.activePID != nil {
		if _, err := s.pool.Exec(ctx, "SELECT pg_terminate_backend($1)", *st.activePID); err != nil {
			return fmt.Errorf("end the connection (pid %d) still using unusable slot %s: %w", *st.activePID, db.Slot, err)
		}
	}
	if _, err := s.pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", db.Slot); err != nil {
		return fmt.Errorf("drop unusable slot %s: %w", db.Slot, err)
	}
	return nil
}

// createSlot creates the slot with an exported snapshot: rows visible in the
// snapshot are read from the table (snapshot.go), everything after from the
// stream. relay_state.snapshot_pending says so until the snapshot is
// delivered.
func (s *session) createSlot(ctx context.Context, sl *slot) error {
	db := s.cfg.Database
	_, err := s.pool.Exec(ctx, `INSERT INTO `+outboxschema.Quote(db.Schema)+`.relay_state (slot, snapshot_pending) VALUES ($1, true)
		ON CONFLICT (slot) DO UPDATE SET snapshot_pending = true, updated_at = now()`, db.Slot)
	if err != nil {
		return fmt.Errorf("record slot state: %w", err)
	}
	var res pglogrepl.CreateReplicationSlotResult
	if db.FailoverSlot {
		ver := sl.conn.ParameterStatus("server_version")
		major, err := strconv.Atoi(strings.TrimFunc(strings.SplitN(ver, ".", 2)[0], func(r rune) bool { return r < '0' || r > '9' }))
		if err != nil {
			return fatal(fmt.Errorf("database.failover_slot: cannot read the server's major version from %q: remove failover_slot, or report this", ver))
		}
		if major < 17 {
			return fatal(fmt.Errorf("database.failover_slot needs PostgreSQL 17 or later (this server is %s): remove it, or upgrade", ver))
		}
		// The new syntax (PostgreSQL 15+) is the only one that takes FAILOVER.
		res, err = pglogrepl.ParseCreateReplicationSlot(sl.conn.Exec(ctx,
			fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)", outboxschema.Quote(db.Slot))))
	} else {
		res, err = pglogrepl.CreateReplicationSlot(ctx, sl.conn, db.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	}
	if err != nil {
		return fmt.Errorf("create replication slot %s: %w", db.Slot, err)
	}
	sl.start, err = pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return fmt.Errorf("create replication slot: %w", err)
	}
	s.r.metrics.slotCreated()
	s.logger.Info("replication slot created", "slot", db.Slot, "consistent_point", res.ConsistentPoint)
	// Import the snapshot before the replication connection runs any other
	// command: that would end the snapshot.
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET TRANSACTION SNAPSHOT '%s'", res.SnapshotName)); err != nil {
		tx.Rollback(ctx)
		return fmt.Errorf("import the slot's snapshot: %w", err)
	}
	sl.snapshot = tx
	return nil
}

func (s *session) waitSlotFree(ctx context.Context) error {
	for range 100 {
		var active bool
		if err := s.pool.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", s.cfg.Database.Slot).Scan(&active); err != nil {
			return fmt.Errorf("read slot: %w", err)
		}
		if !active {
			return nil
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("slot %s is still in use by another connection", s.cfg.Database.Slot)
}
