package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// connect opens the pool and checks the database is ready for the relay:
// wal_level, the migrated schema, the publication (created when missing).
func (s *session) connect(ctx context.Context) error {
	db := s.cfg.Database
	pcfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		return fatal(fmt.Errorf("database.url: %v", err))
	}
	pcfg.MaxConns = 8
	pcfg.ConnConfig.RuntimeParams["application_name"] = "outbox-relay"
	s.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if err := s.checkDatabase(ctx); err != nil {
		s.pool.Close()
		return err
	}
	return nil
}

// checkDatabase is connect's checks.
func (s *session) checkDatabase(ctx context.Context) error {
	db := s.cfg.Database
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var level string
	if err := s.pool.QueryRow(cctx, "SHOW wal_level").Scan(&level); err != nil {
		s.r.dbOK.Store(false)
		if isFatalPgError(err) {
			return fatal(fmt.Errorf("connect to PostgreSQL: %w", err))
		}
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	s.r.dbOK.Store(true)
	if level != "logical" {
		return fatal(fmt.Errorf("%w: PostgreSQL runs with wal_level=%s; the relay reads the outbox through logical replication: "+
			"run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL (on managed services, enable logical replication in the instance's parameters)", ErrWALLevel, level))
	}
	var events, state bool
	// seq (migration 2) and dead_letters.event_seq (migration 3) are what
	// the snapshot and replays order by.
	err := s.pool.QueryRow(cctx, `SELECT to_regclass($1) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'seq' AND NOT attisdropped),
		to_regclass($2) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($3) AND attname = 'event_seq' AND NOT attisdropped)`,
		s.table, outboxschema.Quote(db.Schema)+".relay_state", outboxschema.Quote(db.Schema)+".dead_letters").Scan(&events, &state)
	if err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	if !events || !state {
		return fatal(fmt.Errorf("%w: %s has no outbox tables, or an older version of them than this relay needs: run `outbox migrate up --schema %s` (or apply `outbox migrate sql`) before starting the relay",
			ErrNotMigrated, db.Schema, db.Schema))
	}
	var pub bool
	if err := s.pool.QueryRow(cctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, db.Publication).Scan(&pub); err != nil {
		return fmt.Errorf("check publication: %w", err)
	}
	if !pub {
		q := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert')", outboxschema.Quote(db.Publication), s.table)
		if _, err := s.pool.Exec(cctx, q); err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42710" { // duplicate_object: another relay made it
				return fatal(fmt.Errorf("create publication %s: %w", db.Publication, err))
			}
		}
		s.logger.Info("publication created", "publication", db.Publication)
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

// isFatalPgError reports PostgreSQL errors that no retry fixes: bad
// credentials, a missing database, missing privileges.
func isFatalPgError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "28000", "28P01", "3D000", "42501":
		return true
	}
	return false
}
