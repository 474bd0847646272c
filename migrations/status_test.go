package migrations_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/migrations"
)

// TestStatusOnlyReads: Status and Pending work in a read-only session and
// create nothing (no schema, no version table), on a database never migrated
// and on a migrated one.
func TestStatusOnlyReads(t *testing.T) {
	t.Parallel()
	dsn := testutil.DatabaseURL(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	schema := testutil.RandomName("mig_")
	cfg := &migrations.Config{Schema: schema, Publication: schema + "_pub"}
	t.Cleanup(func() {
		for _, q := range []string{"DROP PUBLICATION IF EXISTS " + cfg.Publication, "DROP SCHEMA IF EXISTS " + schema + " CASCADE"} {
			if _, err := pool.Exec(ctx, q); err != nil {
				t.Errorf("cleanup: %s: %v", q, err)
			}
		}
	})

	// Every statement of this session runs in a read-only transaction:
	// CREATE SCHEMA IF NOT EXISTS, or goose creating its table, would fail.
	roCfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	roCfg.RuntimeParams["default_transaction_read_only"] = "on"
	ro := stdlib.OpenDB(*roCfg)
	t.Cleanup(func() { ro.Close() })
	m, err := migrations.New(ro, cfg)
	if err != nil {
		t.Fatal(err)
	}

	st, err := m.Status(ctx)
	if err != nil {
		t.Fatalf("status of a database never migrated, read-only: %v", err)
	}
	if len(st) != int(migrations.Latest()) {
		t.Errorf("%d versions listed, want %d", len(st), migrations.Latest())
	}
	for _, s := range st {
		if s.Applied || !s.AppliedAt.IsZero() || !strings.HasSuffix(s.Name, ".sql") {
			t.Errorf("never migrated, yet %+v", s)
		}
	}
	pending, err := m.Pending(ctx)
	if err != nil || !pending {
		t.Errorf("Pending = %v, %v; want true", pending, err)
	}
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("status created schema %s", schema)
	}

	// Migrated: the read-only status sees every version applied.
	rw := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { rw.Close() })
	mrw, err := migrations.New(rw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mrw.Up(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = m.Status(ctx)
	if err != nil {
		t.Fatalf("status of a migrated database, read-only: %v", err)
	}
	for _, s := range st {
		var at time.Time
		if err := pool.QueryRow(ctx, "SELECT tstamp FROM "+schema+".schema_migrations WHERE version_id = $1", s.Version).Scan(&at); err != nil {
			t.Fatal(err)
		}
		if !s.Applied || !s.AppliedAt.Equal(at) {
			t.Errorf("after up: %+v, want applied at %v", s, at)
		}
	}
	if pending, err := m.Pending(ctx); err != nil || pending {
		t.Errorf("after up: Pending = %v, %v; want false", pending, err)
	}
	// Rolled back: pending again.
	if _, err := mrw.Down(ctx, 0); err != nil {
		t.Fatal(err)
	}
	st, err = m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Applied {
			t.Errorf("after down: %+v", s)
		}
	}
}
