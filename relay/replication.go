package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/pgident"
)

// session is one stretch of being connected: leadership, slot, stream and
// pipeline. Any error ends the session; the relay then starts a new one from
// the slot's confirmed position, so nothing in memory needs to survive.
type session struct {
	r      *Relay
	cfg    *Config
	logger *slog.Logger

	pool     *pgxpool.Pool
	lockConn *pgx.Conn
	repl     *pgconn.PgConn

	pos      *Position
	disp     *dispatcher
	mark     *marker
	gate     *gate   // bounds the events in the pipeline (max_pending, max_pending_bytes)
	handoff  []*item // routed events not yet handed to the dispatcher
	replBuf  *bufio.Reader
	rels     map[uint32]*relationMap
	table    string // quoted schema.events
	routes   []*Route
	serverAt pglogrepl.LSN
	catchup  *catchup // non-nil while resuming: skip rows already marked delivered
	// ranBefore: a relay used this slot before (its relay_state row existed).
	ranBefore bool
}

// catchup: after a restart the slot sends again every transaction after its
// confirmed position, including events the previous session had already
// delivered and marked but not yet confirmed. While resuming, the relay looks
// their rows up, a batch at a time, and skips those already marked delivered
// (with on_delivered: mark; a deleted row cannot be told from one not yet
// visible, so delete mode skips nothing). Catch-up ends with the first batch
// in which no row was marked. It cuts the duplicates a crash causes; it is not
// needed for correctness.
type catchup struct {
	buf     []pendingEvent
	skipped int
}

type pendingEvent struct {
	ev  *Event
	txn *Txn
}

const (
	catchupBatch  = 500
	catchupLinger = 10 * time.Millisecond
	// replReadBuffer is the replication connection's read buffer.
	replReadBuffer = 256 << 10
	// handoffBatch is the most events the stream hands the dispatcher at once.
	handoffBatch = 256
)

func (s *session) flushCatchup(ctx context.Context, keepalive func() error) error {
	c := s.catchup
	if len(c.buf) == 0 {
		return nil
	}
	ids := make([][16]byte, len(c.buf)) // binary uuids, see marker.exec
	for i, p := range c.buf {
		ids[i] = p.ev.ID
	}
	marked := map[[16]byte]bool{}
	rows, err := s.pool.Query(ctx, `SELECT id FROM `+s.table+` WHERE id = ANY($1) AND delivered_at IS NOT NULL`, ids)
	if err == nil {
		var id [16]byte
		_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
			marked[id] = true
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("resume: look up delivered rows: %w", err)
	}
	buf := c.buf
	c.buf = nil
	if len(marked) == 0 {
		s.catchup = nil
		s.logger.Info("resumed: caught up with what the previous session delivered", "skipped_already_delivered", c.skipped)
	}
	for _, p := range buf {
		if marked[[16]byte(p.ev.ID)] {
			c.skipped++
			p.txn.Done()
			continue
		}
		if err := s.submitCounted(ctx, p.txn, p.ev, keepalive, true); err != nil {
			// The rest stay counted and unfinished: the position cannot move
			// past them, and the next session reads them again.
			return err
		}
	}
	return s.handOff(ctx, keepalive)
}

func (s *session) run(ctx context.Context) (err error) {
	db := s.cfg.Database
	s.table = pgident.Quote(db.Schema) + ".events"
	if err := s.connect(ctx); err != nil {
		return err
	}
	defer s.pool.Close()

	if err := s.lead(ctx); err != nil {
		return err
	}
	if s.lockConn == nil { // ctx done while standby
		return nil
	}
	defer s.lockConn.Close(context.Background())

	// Leadership is lost with the lock's connection: end the session then.
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go s.watchLock(sctx, cancel)

	start, snapshot, err := s.prepareSlot(sctx)
	if s.repl != nil {
		defer s.repl.Close(context.Background())
	}
	if err != nil {
		return err
	}

	// The pipeline runs on its own context: on shutdown it keeps delivering
	// while the stream drains.
	pctx, pcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		pcancel()
		wg.Wait()
	}()
	s.pos = NewPosition(start)
	s.gate = newGate(s.cfg.Delivery.MaxPending, s.cfg.Delivery.MaxPendingBytes)
	release := func(n int, bytes int64) {
		s.gate.release(n, bytes)
		s.r.metrics.setInflight(s.gate.held())
	}
	s.mark = newMarker(s.pool, db.Schema, s.cfg.Delivery.OnDelivered, s.cfg.Delivery, s.logger, release)
	dlq := newDeadLetterWriter(s.pool, db.Schema, s.logger)
	rp := newReplayer(s.pool, db.Schema, s.r.router, s.cfg.Source, s.logger, func(ctx context.Context, it *item) error {
		select {
		case s.disp.in <- []*item{it}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	s.disp = newDispatcher(s.cfg.Delivery, s.r.sinks, s.logger, s.r.metrics, dlq, func(items []*item) {
		marks := items[:0] // the dispatcher hands the slice over
		for _, it := range items {
			if it.replay == nil {
				marks = append(marks, it)
				continue
			}
			select {
			case rp.finished <- it:
			case <-pctx.Done():
				return
			}
		}
		if len(marks) > 0 {
			select {
			case s.mark.in <- marks:
			case <-pctx.Done():
			}
		}
	})
	s.disp.tracing = s.r.tracing
	wg.Add(5)
	go func() { defer wg.Done(); s.sample(pctx) }()
	go func() { defer wg.Done(); s.retain(pctx) }()
	go func() { defer wg.Done(); s.disp.run(pctx) }()
	go func() { defer wg.Done(); s.mark.run(pctx) }()
	go func() {
		defer wg.Done()
		if err := rp.run(pctx); err != nil {
			s.logger.Error("dead-letter replays stopped", "error", err)
		}
	}()

	if snapshot != nil {
		err := s.backfill(sctx, snapshot)
		snapshot.Rollback(context.Background())
		if err != nil {
			return err
		}
	}
	if err := s.stream(sctx, start, snapshot == nil); err != nil {
		return err
	}
	return nil
}

// connect opens the pool and checks the database is ready for the relay.
func (s *session) connect(ctx context.Context) error {
	db := s.cfg.Database
	pcfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		return fatal(fmt.Errorf("database.url: %w", redactErr(err, db.URL)))
	}
	pcfg.MaxConns = 8
	pcfg.ConnConfig.RuntimeParams["application_name"] = "outbox-relay"
	s.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var level string
	if err := s.pool.QueryRow(cctx, "SHOW wal_level").Scan(&level); err != nil {
		s.pool.Close()
		s.r.dbOK.Store(false)
		if isFatalPgError(err) {
			return fatal(fmt.Errorf("connect to PostgreSQL: %w", err))
		}
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	s.r.dbOK.Store(true)
	if level != "logical" {
		s.pool.Close()
		return fatal(fmt.Errorf("%w: PostgreSQL runs with wal_level=%s; the relay reads the outbox through logical replication: "+
			"run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL (on managed services, enable logical replication in the instance's parameters)", ErrWALLevel, level))
	}
	var events, state bool
	err = s.pool.QueryRow(cctx, `SELECT to_regclass($1) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'seq' AND NOT attisdropped),
		to_regclass($2) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($3) AND attname = 'event_seq' AND NOT attisdropped)`,
		s.table, pgident.Quote(db.Schema)+".relay_state", pgident.Quote(db.Schema)+".dead_letters").Scan(&events, &state)
	if err != nil {
		s.pool.Close()
		return fmt.Errorf("check schema: %w", err)
	}
	if !events || !state {
		s.pool.Close()
		return fatal(fmt.Errorf("%w: %s has no outbox tables, or an older version of them than this relay needs: run `outbox migrate up --schema %s` (or apply `outbox migrate sql`) before starting the relay",
			ErrNotMigrated, db.Schema, db.Schema))
	}
	var pub bool
	if err := s.pool.QueryRow(cctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, db.Publication).Scan(&pub); err != nil {
		s.pool.Close()
		return fmt.Errorf("check publication: %w", err)
	}
	if !pub {
		q := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert')", pgident.Quote(db.Publication), s.table)
		if _, err := s.pool.Exec(cctx, q); err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42710" { // duplicate_object: another relay made it
				s.pool.Close()
				return fatal(fmt.Errorf("create publication %s: %w", db.Publication, err))
			}
		}
		s.logger.Info("publication created", "publication", db.Publication)
	}
	return nil
}

// lead waits until this relay holds the outbox's advisory lock.
func (s *session) lead(ctx context.Context) error {
	db := s.cfg.Database
	id := lockID(db.Schema, db.Slot)
	ccfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		return fatal(fmt.Errorf("database.url: %w", redactErr(err, db.URL)))
	}
	setLiveness(ccfg.RuntimeParams, db.FailoverTimeout.D())
	// A standby keeps one connection and asks for the lock on it every
	// standby_poll; an error ends the session (and so the connection).
	conn, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return fmt.Errorf("connect for the leader lock: %w", err)
	}
	for logged := false; ; {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", id).Scan(&got); err != nil {
			conn.Close(context.Background())
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("leader lock: %w", err)
		}
		if got {
			if err := s.recordHolder(ctx, conn); err != nil {
				conn.Close(context.Background())
				return err
			}
			s.lockConn = conn
			s.r.active.Store(true)
			s.r.metrics.setActive(true)
			s.logger.Info("relay is active", "slot", db.Slot, "schema", db.Schema)
			return nil
		}
		if !logged {
			s.logger.Info("relay is standby: another relay holds the outbox", "slot", db.Slot, "schema", db.Schema)
			logged = true
			s.r.recovered()
		}
		s.r.metrics.setActive(false)
		select {
		case <-time.After(db.StandbyPoll.D()):
		case <-ctx.Done():
			conn.Close(context.Background())
			return nil
		}
	}
}

// recordHolder records this relay as the slot's holder in relay_state, learns
// whether a relay used the slot before, and warns when another slot tails the
// same outbox.
func (s *session) recordHolder(ctx context.Context, conn *pgx.Conn) error {
	db := s.cfg.Database
	host, _ := os.Hostname()
	holder := fmt.Sprintf("%s pid %d (%s)", host, os.Getpid(), s.r.version)
	var inserted bool
	err := conn.QueryRow(ctx, `INSERT INTO `+pgident.Quote(db.Schema)+`.relay_state (slot, snapshot_pending, holder, holder_since)
		VALUES ($1, false, $2, now()) ON CONFLICT (slot) DO UPDATE SET holder = EXCLUDED.holder, holder_since = now(), updated_at = now()
		RETURNING (xmax = 0)`, db.Slot, holder).Scan(&inserted)
	if err != nil {
		return fmt.Errorf("record the active relay: %w", err)
	}
	s.ranBefore = !inserted
	rows, err := conn.Query(ctx, `SELECT r.slot FROM `+pgident.Quote(db.Schema)+`.relay_state r
		JOIN pg_replication_slots p ON p.slot_name = r.slot WHERE r.slot <> $1`, db.Slot)
	var others []string
	if err == nil {
		others, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	switch {
	case err != nil:
		// Only a warning depends on it.
		s.logger.Warn("could not check for other replication slots tailing this outbox", "slot", db.Slot, "error", err)
	case len(others) > 0:
		s.logger.Warn("another replication slot tails this outbox: delivered_at is shared, so each relay marks rows the other may not have delivered; use one slot (one relay config with all routes) per outbox",
			"slot", db.Slot, "other_slots", others)
	}
	return nil
}

func (s *session) watchLock(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(s.cfg.Database.StandbyPoll.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, c := context.WithTimeout(ctx, 5*time.Second)
			err := s.lockConn.Ping(pctx)
			c()
			if err != nil && ctx.Err() == nil {
				s.logger.Error("lost the leader lock's connection; stepping down", "error", err)
				cancel(fmt.Errorf("leader lock lost: %w", err))
				return
			}
		}
	}
}

// prepareSlot connects for replication and makes sure the slot exists. When
// it creates the slot, it returns the transaction holding the slot's exported
// snapshot, whose undelivered rows must be delivered before the stream.
func (s *session) prepareSlot(ctx context.Context) (start pglogrepl.LSN, snapshot pgx.Tx, err error) {
	db := s.cfg.Database
	rcfg, err := pgconn.ParseConfig(db.URL)
	if err != nil {
		return 0, nil, fatal(fmt.Errorf("database.url: %w", redactErr(err, db.URL)))
	}
	rcfg.RuntimeParams["replication"] = "database"
	setLiveness(rcfg.RuntimeParams, db.FailoverTimeout.D())
	rcfg.RuntimeParams["application_name"] = "outbox-relay"
	// pgproto3 reads at most 8 KiB per system call; a backlog streams at
	// 100+ MB/s, so read through a larger buffer (one read takes what the
	// socket holds).
	rcfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		s.replBuf = bufio.NewReaderSize(r, replReadBuffer)
		return pgproto3.NewFrontend(s.replBuf, w)
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
	s.repl, err = pgconn.ConnectConfig(ctx, rcfg)
	if err != nil {
		if isFatalPgError(err) {
			return 0, nil, fatal(fmt.Errorf("replication connection: %w (the relay's role needs the REPLICATION attribute)", err))
		}
		return 0, nil, fmt.Errorf("replication connection: %w", err)
	}

	var (
		exists            bool
		plugin, walStatus string
		confirmed         pglogrepl.LSN
		activePID         *int32
		snapshotPending   bool
		dropped           bool // this relay dropped it, as unusable
	)
	err = s.pool.QueryRow(ctx, `SELECT plugin, coalesce(wal_status, ''), coalesce(confirmed_flush_lsn, '0/0'::pg_lsn)::text, active_pid
		FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical'`, db.Slot).Scan(&plugin, &walStatus, &confirmed, &activePID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return 0, nil, fmt.Errorf("read slot: %w", err)
	default:
		exists = true
	}
	// Whether a relay created the slot and stopped before it delivered the
	// slot's snapshot decides between resuming and a new snapshot: an error
	// here must not read as "no".
	err = s.pool.QueryRow(ctx, `SELECT snapshot_pending FROM `+pgident.Quote(db.Schema)+`.relay_state WHERE slot = $1`, db.Slot).Scan(&snapshotPending)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// recordHolder wrote the row a moment ago; someone deleted it
		// since. Nothing then says the snapshot was delivered: take a new
		// one (rows already marked delivered are not sent again).
		s.logger.Warn("the slot's row in relay_state is gone; taking a new snapshot rather than resuming a slot whose snapshot may not have been delivered", "slot", db.Slot)
		snapshotPending = true
	case err != nil:
		return 0, nil, fmt.Errorf("read relay_state.snapshot_pending of slot %s (without it the relay cannot tell whether the slot's snapshot was delivered, so it does not resume the slot): %w", db.Slot, err)
	}

	if exists && plugin != "pgoutput" {
		return 0, nil, fatal(fmt.Errorf("%w: slot %s uses %q; the relay needs pgoutput: pick another database.slot or drop that slot", ErrSlotPlugin, db.Slot, plugin))
	}
	if exists && (walStatus == "lost" || snapshotPending) {
		reason := "its WAL was removed (wal_status = lost, see max_slot_wal_keep_size)"
		if snapshotPending {
			reason = "a relay stopped before it finished delivering the slot's snapshot"
		}
		s.logger.Error("replication slot is unusable; dropping and recreating it, then delivering every undelivered row", "slot", db.Slot, "reason", reason)
		if activePID != nil {
			if _, err := s.pool.Exec(ctx, "SELECT pg_terminate_backend($1)", *activePID); err != nil {
				return 0, nil, fmt.Errorf("end the connection (pid %d) still using unusable slot %s: %w", *activePID, db.Slot, err)
			}
		}
		if _, err := s.pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", db.Slot); err != nil {
			return 0, nil, fmt.Errorf("drop unusable slot %s: %w", db.Slot, err)
		}
		exists, dropped = false, true
	}
	if exists {
		if activePID != nil {
			// We hold the leader lock, so the walsender still using the slot is a
			// leftover of our own earlier connection (a killed relay).
			s.logger.Warn("replication slot is held by a stale connection; terminating it", "slot", db.Slot, "pid", *activePID)
			if _, err := s.pool.Exec(ctx, "SELECT pg_terminate_backend($1)", *activePID); err != nil {
				return 0, nil, fmt.Errorf("end the stale connection (pid %d) holding slot %s: %w", *activePID, db.Slot, err)
			}
			if err := s.waitSlotFree(ctx); err != nil {
				return 0, nil, err
			}
		}
		s.logger.Info("resuming from replication slot", "slot", db.Slot, "confirmed", confirmed.String())
		return confirmed, nil, nil
	}

	if s.ranBefore && !dropped {
		s.logger.Error("replication slot is gone (dropped, or lost in a failover); recreating it and delivering every undelivered row from a snapshot",
			"slot", db.Slot)
	}
	// Create the slot with an exported snapshot: rows visible in the snapshot
	// are read from the table, everything after from the stream.
	_, err = s.pool.Exec(ctx, `INSERT INTO `+pgident.Quote(db.Schema)+`.relay_state (slot, snapshot_pending) VALUES ($1, true)
		ON CONFLICT (slot) DO UPDATE SET snapshot_pending = true, updated_at = now()`, db.Slot)
	if err != nil {
		return 0, nil, fmt.Errorf("record slot state: %w", err)
	}
	var res pglogrepl.CreateReplicationSlotResult
	if db.FailoverSlot {
		ver := s.repl.ParameterStatus("server_version")
		major, err := strconv.Atoi(strings.TrimFunc(strings.SplitN(ver, ".", 2)[0], func(r rune) bool { return r < '0' || r > '9' }))
		if err != nil {
			return 0, nil, fatal(fmt.Errorf("database.failover_slot: cannot read the server's major version from %q: remove failover_slot, or report this", ver))
		}
		if major < 17 {
			return 0, nil, fatal(fmt.Errorf("database.failover_slot needs PostgreSQL 17 or later (this server is %s): remove it, or upgrade", s.repl.ParameterStatus("server_version")))
		}
		// The new syntax (PostgreSQL 15+) is the only one that takes FAILOVER.
		res, err = pglogrepl.ParseCreateReplicationSlot(s.repl.Exec(ctx,
			fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)", pgident.Quote(db.Slot))))
	} else {
		res, err = pglogrepl.CreateReplicationSlot(ctx, s.repl, db.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	}
	if err != nil {
		return 0, nil, fmt.Errorf("create replication slot %s: %w", db.Slot, err)
	}
	start, err = pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, nil, fmt.Errorf("create replication slot: %w", err)
	}
	s.r.metrics.slotCreated()
	s.logger.Info("replication slot created", "slot", db.Slot, "consistent_point", res.ConsistentPoint)
	// Import the snapshot before the replication connection runs any other
	// command: that would end the snapshot.
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, nil, fmt.Errorf("snapshot: %w", err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET TRANSACTION SNAPSHOT '%s'", res.SnapshotName)); err != nil {
		tx.Rollback(ctx)
		return 0, nil, fmt.Errorf("import the slot's snapshot: %w", err)
	}
	return start, tx, nil
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

// backfill feeds every undelivered row visible in the slot's snapshot into
// the pipeline, a page at a time, in the stream's order as far as the table
// can tell it: by seq, the sequence value each row took when it was inserted
// (insertion order within a transaction; commit order across the
// transactions of one key when writers serialize per aggregate, as they must
// for the stream's order to mean anything). See migrations/sql/00002.
func (s *session) backfill(ctx context.Context, tx pgx.Tx) error {
	db := s.cfg.Database
	txn := s.pos.Begin()
	txn.OnDone(func() {
		_, err := s.pool.Exec(context.Background(), `UPDATE `+pgident.Quote(db.Schema)+`.relay_state SET snapshot_pending = false, updated_at = now() WHERE slot = $1`, db.Slot)
		if err != nil {
			s.logger.Error("recording the snapshot as delivered failed; the next start delivers it again", "error", err)
			return
		}
		s.logger.Info("snapshot delivered", "slot", db.Slot)
	})
	q := `DECLARE backfill NO SCROLL CURSOR FOR SELECT ` + strings.Join(eventColumns, ", ") + `
		FROM ` + s.table + ` WHERE delivered_at IS NULL ORDER BY seq`
	if _, err := tx.Exec(ctx, q); err != nil {
		return fmt.Errorf("snapshot of slot %s: read the undelivered rows: %w", db.Slot, err)
	}
	total := 0
	for {
		// Binary results: the bytes pgoutput sends, decoded by the same code.
		rows, err := tx.Query(ctx, "FETCH 1000 FROM backfill", pgx.QueryResultFormats{pgx.BinaryFormatCode})
		if err != nil {
			return fmt.Errorf("snapshot of slot %s: read the undelivered rows: %w", db.Slot, err)
		}
		var page []*Event
		for rows.Next() {
			row := rawRowFromResult(rows, 0)
			ev := &Event{}
			if err := row.decode(ev); err != nil {
				rows.Close()
				return fmt.Errorf("snapshot of slot %s: %w", db.Slot, err)
			}
			page = append(page, ev)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("snapshot of slot %s: read the undelivered rows: %w", db.Slot, err)
		}
		for _, ev := range page {
			if err := s.submit(ctx, txn, ev, nil); err != nil {
				return err
			}
		}
		total += len(page)
		if len(page) < 1000 {
			break
		}
	}
	if err := s.handOff(ctx, nil); err != nil {
		return err
	}
	s.logger.Info("snapshot read", "slot", db.Slot, "undelivered_rows", total)
	txn.Commit(0)
	return nil
}

// submit routes ev and hands it to the dispatcher, waiting for room when
// max_pending events are already in the pipeline. While it waits it keeps
// reporting the position (keepalive) so PostgreSQL does not time the stream out.
func (s *session) submit(ctx context.Context, txn *Txn, ev *Event, keepalive func() error) error {
	return s.submitCounted(ctx, txn, ev, keepalive, false)
}

// submitCounted is submit for an event that may already be counted in its
// transaction (added).
func (s *session) submitCounted(ctx context.Context, txn *Txn, ev *Event, keepalive func() error, added bool) error {
	s.r.metrics.eventRead()
	s.routes = s.r.router.Match(s.routes[:0], ev)
	if len(s.routes) == 0 {
		// Unrouted: an item without deliveries, marked like a delivered
		// one and holding the position until it is (see dispatcher.accept).
		s.r.metrics.eventDropped()
		s.logger.Debug("event matched no route; dropped, its row is marked as handled",
			"event_id", ev.ID.String(), "event_type", ev.EventType, "aggregate_type", ev.AggregateType)
	}
	if ev.decodeErr != nil {
		s.logger.Warn("a value of the row cannot be decoded; dead-lettering it on every route that takes it",
			"event_id", ev.ID.String(), "event_type", ev.EventType, "error", ev.decodeErr)
	}
	it := newItem(ev, txn, len(s.routes))
	for _, rt := range s.routes {
		dl := &delivery{route: rt, item: it, msg: Message{Event: ev, Route: rt.Name, Source: s.cfg.Source, Headers: ev.Headers, Attempt: 1}}
		dest, err := rt.Destination.Render(ev)
		if err != nil {
			// Dead-letter right away: the dispatcher sees a permanent failure.
			dl.msg.Destination = rt.Destination.String()
			dl.err = err
		} else {
			dl.msg.Destination = dest
		}
		if ev.decodeErr != nil {
			// Dead-letter right away too: retrying cannot decode the row.
			dl.err = MarkPermanent(ev.decodeErr)
		}
		it.ds = append(it.ds, dl)
	}
	if !added {
		txn.Add(1)
	}
	it.weight = min(int64(len(ev.Payload))+256, s.cfg.Delivery.MaxPendingBytes)
	if s.gate.full(it.weight) {
		// The events waiting to be handed over hold room too: hand them
		// over before waiting for room.
		if err := s.handOff(ctx, keepalive); err != nil {
			return err
		}
		if err := s.gate.wait(ctx, it.weight, s.cfg.Delivery.StatusInterval.D(), keepalive); err != nil {
			return err
		}
	}
	s.gate.take(it.weight)
	s.handoff = append(s.handoff, it)
	if len(s.handoff) >= handoffBatch {
		return s.handOff(ctx, keepalive)
	}
	return nil
}

// buffered reports whether more of the stream is already in memory, so that
// the next read will not wait for the server.
func (s *session) buffered() bool {
	return s.repl.Frontend().ReadBufferLen() > 0 || (s.replBuf != nil && s.replBuf.Buffered() > 0)
}

// handOff hands the routed events to the dispatcher in one channel send. The
// stream calls it before a read that may wait for the server (nothing more is
// buffered), every handoffBatch events, and before it waits for room.
func (s *session) handOff(ctx context.Context, keepalive func() error) error {
	if len(s.handoff) == 0 {
		return nil
	}
	s.r.metrics.setInflight(s.gate.held())
	batch := s.handoff
	s.handoff = make([]*item, 0, min(2*len(batch), handoffBatch))
	return sendKeepingAlive(ctx, s.disp.in, batch, s.cfg.Delivery.StatusInterval.D(), keepalive)
}

// sendKeepingAlive sends v on ch. While the send blocks it calls keepalive
// (when set) every interval, so PostgreSQL does not time the stream out while
// the relay waits for room.
func sendKeepingAlive[T any](ctx context.Context, ch chan<- T, v T, interval time.Duration, keepalive func() error) error {
	select {
	case ch <- v:
		return nil
	default:
	}
	var tick <-chan time.Time
	if keepalive != nil {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case ch <- v:
			return nil
		case <-tick:
			if err := keepalive(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stream reads the slot from start and feeds inserts into the pipeline until
// ctx is done; then it drains the pipeline and confirms its final position.
func (s *session) stream(ctx context.Context, start pglogrepl.LSN, resumed bool) error {
	db := s.cfg.Database
	args := []string{
		"proto_version '1'",
		fmt.Sprintf("publication_names '%s'", db.Publication),
		"binary 'true'",
	}
	err := pglogrepl.StartReplication(ctx, s.repl, db.Slot, start, pglogrepl.StartReplicationOptions{PluginArgs: args})
	if err != nil {
		return startReplicationError(err)
	}
	s.r.streaming.Store(true)
	s.r.recovered()
	s.logger.Info("streaming started", "slot", db.Slot, "publication", db.Publication, "from", start.String())
	s.rels = map[uint32]*relationMap{}
	s.serverAt = start
	if resumed && s.ranBefore && s.cfg.Delivery.OnDelivered == "mark" {
		s.catchup = &catchup{}
	}

	interval := s.cfg.Delivery.StatusInterval.D()
	next := time.Now().Add(interval)
	keepalive := func() error {
		next = time.Now().Add(interval)
		return s.sendStatus(ctx)
	}
	var txn *Txn
	var commitTime time.Time
	var commitLSN pglogrepl.LSN
	// Reads wait on the connection's read deadline, not on a context per
	// message (a context and pgconn's watcher per message cost ~13% of the
	// relay's CPU); cancelling ctx moves the deadline to now.
	conn := s.repl.Conn()
	stopWake := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stopWake()
	defer conn.SetReadDeadline(time.Time{})
	var deadline time.Time
	for {
		if ctx.Err() != nil {
			conn.SetReadDeadline(time.Time{})
			s.handOffForDrain()
			return s.drain(context.Cause(ctx))
		}
		if !time.Now().Before(next) {
			if err := keepalive(); err != nil {
				return err
			}
		}
		want := next
		if s.catchup != nil && len(s.catchup.buf) > 0 {
			// Do not hold the first events after a start for long.
			if soon := time.Now().Add(catchupLinger); soon.Before(next) {
				want = soon
			}
		}
		if len(s.handoff) > 0 && !s.buffered() {
			// The next read may wait: hand over what is routed first.
			// While more messages are already in memory, the events of
			// several transactions go over together.
			if err := s.handOff(ctx, keepalive); err != nil {
				if ctx.Err() != nil {
					continue
				}
				return err
			}
		}
		if !want.Equal(deadline) && ctx.Err() == nil {
			deadline = want
			conn.SetReadDeadline(deadline)
		}
		raw, err := s.repl.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) && s.catchup != nil && ctx.Err() == nil {
				if err := s.flushCatchup(ctx, keepalive); err != nil && ctx.Err() == nil {
					return err
				}
			}
			if pgconn.Timeout(err) || ctx.Err() != nil {
				continue
			}
			return fmt.Errorf("replication stream: %w", err)
		}
		var cd *pgproto3.CopyData
		switch m := raw.(type) {
		case *pgproto3.CopyData:
			cd = m
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return errors.New("replication stream: the server ended the stream")
		default:
			continue
		}
		if len(cd.Data) == 0 {
			continue
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			if err != nil {
				return fmt.Errorf("replication stream: %w", err)
			}
			if pkm.ServerWALEnd > s.serverAt {
				s.serverAt = pkm.ServerWALEnd
			}
			if pkm.ReplyRequested {
				next = time.Time{}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil {
				return fmt.Errorf("replication stream: %w", err)
			}
			data := xld.WALData
			if len(data) == 0 {
				continue
			}
			switch data[0] {
			case 'B':
				var b pglogrepl.BeginMessage
				if err := b.Decode(data[1:]); err != nil {
					return fmt.Errorf("replication stream: begin: %w", err)
				}
				txn, commitTime, commitLSN = s.pos.Begin(), b.CommitTime, b.FinalLSN
			case 'C':
				var c pglogrepl.CommitMessage
				if err := c.Decode(data[1:]); err != nil {
					return fmt.Errorf("replication stream: commit: %w", err)
				}
				if txn == nil {
					return errors.New("replication stream: commit without begin")
				}
				txn.Commit(c.TransactionEndLSN)
				txn = nil
				if c.TransactionEndLSN > s.serverAt {
					s.serverAt = c.TransactionEndLSN
				}
			case 'R':
				var rel pglogrepl.RelationMessage
				if err := rel.Decode(data[1:]); err != nil {
					return fmt.Errorf("replication stream: relation: %w", err)
				}
				if rel.Namespace != db.Schema || rel.RelationName != "events" {
					s.logger.Warn("publication includes a table that is not the outbox; ignoring its rows", "table", rel.Namespace+"."+rel.RelationName)
					continue
				}
				m, err := newRelationMap(&rel)
				if err != nil {
					return fatal(err)
				}
				s.rels[rel.RelationID] = m
			case 'I':
				if txn == nil {
					return errors.New("replication stream: insert outside a transaction")
				}
				if len(data) >= 5 {
					if _, ok := s.rels[uint32(data[1])<<24|uint32(data[2])<<16|uint32(data[3])<<8|uint32(data[4])]; !ok {
						continue // a table that is not ours
					}
				}
				buf := bytes.Clone(data) // the connection reuses its read buffer
				ev := &Event{CommitTime: commitTime, CommitLSN: commitLSN}
				if err := decodeInsert(buf, s.rels, ev); err != nil {
					return fmt.Errorf("replication stream at %s: %w", xld.WALStart, err)
				}
				if s.catchup != nil {
					txn.Add(1) // held open until the check below
					s.catchup.buf = append(s.catchup.buf, pendingEvent{ev: ev, txn: txn})
					if len(s.catchup.buf) >= catchupBatch {
						if err := s.flushCatchup(ctx, keepalive); err != nil {
							if ctx.Err() != nil {
								continue
							}
							return err
						}
					}
					continue
				}
				if err := s.submit(ctx, txn, ev, keepalive); err != nil {
					if ctx.Err() != nil {
						continue
					}
					return err
				}
			}
		}
	}
}

// sendStatus reports the confirmable position as written, flushed and applied.
func (s *session) sendStatus(ctx context.Context) error {
	pos := s.pos.Confirmable(s.serverAt)
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos, ClientTime: time.Now()})
	if err != nil {
		return fmt.Errorf("replication status update: %w", err)
	}
	s.r.metrics.setPosition(uint64(pos), uint64(s.serverAt))
	return nil
}

// handOffForDrain hands the routed events over on shutdown, when the
// stream's context is done but the pipeline still runs; if the dispatcher does
// not take them within the drain timeout they stay unfinished (and are read
// again on the next start).
func (s *session) handOffForDrain() {
	if len(s.handoff) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.r.drain)
	defer cancel()
	if err := s.handOff(ctx, nil); err != nil {
		s.logger.Warn("stopping: events not handed to the dispatcher; they are delivered again on the next start", "events", len(s.handoff))
	}
}

// drain waits for the events in flight to finish (up to the drain timeout),
// then confirms the final position.
func (s *session) drain(cause error) error {
	s.logger.Info("stopping: finishing deliveries in flight", "in_flight", s.gate.held(), "reason", cause)
	deadline := time.Now().Add(s.r.drain)
	for s.gate.held() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.gate.held(); n > 0 {
		s.logger.Warn("stopping with deliveries unfinished; they are delivered again on the next start", "in_flight", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.sendStatus(ctx)
	pos := s.pos.Confirmable(s.serverAt)
	s.logger.Info("stopped", "confirmed", pos.String())
	if err != nil {
		return err
	}
	if cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// setLiveness makes PostgreSQL notice a vanished relay within about timeout
// and end its backend, releasing the leader lock and the slot.
func setLiveness(params map[string]string, timeout time.Duration) {
	secs := max(1, int(timeout.Seconds()))
	params["tcp_user_timeout"] = fmt.Sprint(timeout.Milliseconds())
	params["tcp_keepalives_idle"] = fmt.Sprint(max(1, secs/3))
	params["tcp_keepalives_interval"] = fmt.Sprint(max(1, secs/6))
	params["tcp_keepalives_count"] = "3"
}

// redactErr replaces a DSN's password in an error message.
func redactErr(err error, dsn string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if pw := dsnPassword(dsn); pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return errors.New(msg)
}

func dsnPassword(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return ""
	}
	return cfg.Password
}
