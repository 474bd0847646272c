// Package migrations holds the outbox's database schema as embedded SQL and applies
// it. The SQL is rendered for the configured schema and publication names, so
// several outboxes can live in one database, and runs under a session advisory
// lock, so two migrators started at once apply each version exactly once.
//
// Applications that migrate from code call New and Up; others print the SQL with
// SQL and apply it with their own tool.
package migrations

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"log/slog"
	"path"
	"slices"
	"strings"
	"testing/fstest"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// VersionTable is the table, inside the outbox schema, that records applied versions.
const VersionTable = "schema_migrations"

// Config says where the outbox lives. A nil *Config means all defaults.
type Config struct {
	// Schema is the schema that holds the outbox tables. Defaults to "outbox".
	Schema string
	// Publication is the logical replication publication over the events table.
	// Defaults to "outbox_events".
	Publication string
	// Logger receives one line per applied version. Defaults to discarding.
	Logger *slog.Logger
}

func (c *Config) withDefaults() (Config, error) {
	var cfg Config
	if c != nil {
		cfg = *c
	}
	cfg.Schema = cmp.Or(cfg.Schema, "outbox")
	cfg.Publication = cmp.Or(cfg.Publication, "outbox_events")
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := outboxschema.ValidateName("schema", cfg.Schema); err != nil {
		return cfg, fmt.Errorf("migrations: %w", err)
	}
	if err := outboxschema.ValidateName("publication", cfg.Publication); err != nil {
		return cfg, fmt.Errorf("migrations: %w", err)
	}
	return cfg, nil
}

// Migrator applies and rolls back the outbox schema in one database.
type Migrator struct {
	cfg      Config
	db       *sql.DB
	provider *goose.Provider
	lockID   int64
}

// Status is the state of one migration version.
type Status struct {
	Version   int64     `json:"version"`
	Name      string    `json:"name"`
	Applied   bool      `json:"applied"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
}

// Result is one version applied or rolled back.
type Result struct {
	Version   int64         `json:"version"`
	Name      string        `json:"name"`
	Direction string        `json:"direction"`
	Duration  time.Duration `json:"duration"`
}

// New returns a Migrator for db. db is typically opened with the pgx stdlib driver
// (stdlib.OpenDB or stdlib.OpenDBFromPool).
func New(db *sql.DB, cfg *Config) (*Migrator, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rendered, err := render(c)
	if err != nil {
		return nil, err
	}
	store, err := database.NewStore(database.DialectPostgres, c.Schema+"."+VersionTable)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	// One lock per schema: migrators of different outboxes do not wait for each other.
	h := fnv.New64a()
	h.Write([]byte("outbox.migrations." + c.Schema))
	lockID := int64(h.Sum64() >> 1)
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(lockID),
		lock.WithLockTimeout(1, 600), // wait up to 10 minutes for another migrator
	)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	p, err := goose.NewProvider("", db, rendered,
		goose.WithStore(store),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return &Migrator{cfg: c, db: db, provider: p, lockID: lockID}, nil
}

// ensureSchema creates the schema that holds the version table, since the
// migrator records versions before the first migration runs.
func (m *Migrator) ensureSchema(ctx context.Context) error {
	// CREATE SCHEMA IF NOT EXISTS races with itself; the transaction-level lock
	// makes two migrators take turns.
	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", m.lockID); err != nil {
		return fmt.Errorf("migrations: lock: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+outboxschema.Quote(m.cfg.Schema)); err != nil {
		return fmt.Errorf("migrations: create schema %s: %w", m.cfg.Schema, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrations: create schema %s: %w", m.cfg.Schema, err)
	}
	return nil
}

// Up applies every pending version.
func (m *Migrator) Up(ctx context.Context) ([]Result, error) {
	if err := m.ensureSchema(ctx); err != nil {
		return nil, err
	}
	res, err := m.provider.Up(ctx)
	out := m.results(res)
	if err != nil {
		return out, fmt.Errorf("migrations: up: %w", err)
	}
	return out, nil
}

// Down rolls back applied versions newer than target, newest first. A target of 0
// removes the whole outbox schema content (the events are lost).
func (m *Migrator) Down(ctx context.Context, target int64) ([]Result, error) {
	if err := m.ensureSchema(ctx); err != nil {
		return nil, err
	}
	res, err := m.provider.DownTo(ctx, target)
	out := m.results(res)
	if err != nil {
		return out, fmt.Errorf("migrations: down: %w", err)
	}
	return out, nil
}

// Status lists every known version and whether it is applied. It only reads:
// on a database never migrated it reports every version pending and creates
// nothing (no schema, no version table, no lock), so a read-only role can run
// it (SELECT on the version table; USAGE on the schema when it exists).
func (m *Migrator) Status(ctx context.Context) ([]Status, error) {
	applied, err := m.applied(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrations: status: %w", err)
	}
	sources := m.provider.ListSources()
	out := make([]Status, 0, len(sources))
	for _, src := range sources {
		at, ok := applied[src.Version]
		out = append(out, Status{
			Version:   src.Version,
			Name:      path.Base(src.Path),
			Applied:   ok,
			AppliedAt: at,
		})
	}
	return out, nil
}

// Pending reports whether some version is not applied yet. Like Status, it
// only reads.
func (m *Migrator) Pending(ctx context.Context) (bool, error) {
	st, err := m.Status(ctx)
	if err != nil {
		return false, err
	}
	for _, s := range st {
		if !s.Applied {
			return true, nil
		}
	}
	return false, nil
}

// applied reads the version table, when there is one, as goose's status
// does: a version is applied when it has a row (rolling back deletes it),
// and applied at its latest row's time. goose's own Status would create the
// schema's version table first.
func (m *Migrator) applied(ctx context.Context) (map[int64]time.Time, error) {
	table := outboxschema.Quote(m.cfg.Schema) + "." + outboxschema.Quote(VersionTable)
	var exists bool
	if err := m.db.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		return nil, err
	}
	out := map[int64]time.Time{}
	if !exists {
		return out, nil
	}
	rows, err := m.db.QueryContext(ctx, "SELECT version_id, max(tstamp) FROM "+table+" GROUP BY version_id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var v int64
		var at time.Time
		if err := rows.Scan(&v, &at); err != nil {
			return nil, err
		}
		out[v] = at
	}
	return out, rows.Err()
}

// Latest is the newest version this build knows.
func Latest() int64 { return outboxschema.Latest() }

func (m *Migrator) results(res []*goose.MigrationResult) []Result {
	out := make([]Result, 0, len(res))
	for _, r := range res {
		if r == nil || r.Source == nil {
			continue
		}
		out = append(out, Result{
			Version:   r.Source.Version,
			Name:      path.Base(r.Source.Path),
			Direction: r.Direction,
			Duration:  r.Duration,
		})
		m.cfg.Logger.Info("migration applied", "version", r.Source.Version, "direction", r.Direction, "duration", r.Duration)
	}
	return out
}

// SQL returns the schema as plain SQL for other migration tools: the up
// migrations in order, or with down set, the down migrations newest first.
func SQL(cfg *Config, down bool) (string, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return "", err
	}
	ms, err := outboxschema.Migrations(c.Schema, c.Publication)
	if err != nil {
		return "", fmt.Errorf("migrations: %w", err)
	}
	if down {
		slices.Reverse(ms)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "-- outbox schema %q, publication %q\n", c.Schema, c.Publication)
	for _, m := range ms {
		part, dir := m.Up(), "up"
		if down {
			part, dir = m.Down(), "down"
		}
		fmt.Fprintf(&b, "\n-- %s (%s)\n%s\n", m.Name, dir, strings.TrimSpace(part))
	}
	return b.String(), nil
}

// render gives goose the migrations rendered for c's schema and publication.
func render(c Config) (fstest.MapFS, error) {
	ms, err := outboxschema.Migrations(c.Schema, c.Publication)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	out := fstest.MapFS{}
	for _, m := range ms {
		out[m.Name] = &fstest.MapFile{Data: []byte(m.Source), Mode: 0o444}
	}
	return out, nil
}
