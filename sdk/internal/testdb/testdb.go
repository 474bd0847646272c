// Package testdb gives the SDK's tests and examples a freshly migrated outbox in
// a schema of their own, without the relay's module: the schema comes from
// sdk/schema, applied here in order (the migrator in the root module records
// versions; tests need only the tables).
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// Env names the variable that holds the test database's URL.
const Env = "OUTBOX_TEST_DATABASE_URL"

const startHint = "start it with `scripts/services.sh up` and export the variables `scripts/services.sh env` prints (or run `make test`)"

// Outbox is a migrated outbox of one test.
type Outbox struct {
	DatabaseURL string
	Schema      string
	Publication string
	Pool        *pgxpool.Pool
}

// Available reports why no test database can be used, or nil.
func Available() error {
	u := os.Getenv(Env)
	if u == "" {
		return fmt.Errorf("%s is not set", Env)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		return err
	}
	defer pool.Close()
	return pool.Ping(ctx)
}

// URL returns the test database's URL. Without a database it skips t, or
// fails it under OUTBOX_TEST_REQUIRE_SERVICES=1.
func URL(t testing.TB) string {
	t.Helper()
	if err := Available(); err != nil {
		msg := fmt.Sprintf("PostgreSQL not available (%v): set %s; %s", err, Env, startHint)
		if os.Getenv("OUTBOX_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return os.Getenv(Env)
}

// New migrates a fresh outbox schema for t and drops it when t ends. Without a
// database it skips t, or fails it under OUTBOX_TEST_REQUIRE_SERVICES=1.
func New(t testing.TB) *Outbox {
	t.Helper()
	URL(t)
	o, err := Open(context.Background())
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	t.Cleanup(o.Close)
	return o
}

// Open migrates a fresh outbox schema in the database at $OUTBOX_TEST_DATABASE_URL.
func Open(ctx context.Context) (*Outbox, error) {
	var b [6]byte
	rand.Read(b[:])
	name := "sdk_" + hex.EncodeToString(b[:])
	o := &Outbox{DatabaseURL: os.Getenv(Env), Schema: name, Publication: name + "_pub"}
	pool, err := pgxpool.New(ctx, o.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	o.Pool = pool
	ms, err := outboxschema.Migrations(o.Schema, o.Publication)
	if err != nil {
		pool.Close()
		return nil, err
	}
	for _, m := range ms {
		if _, err := pool.Exec(ctx, m.Up()); err != nil {
			o.Close()
			return nil, fmt.Errorf("migration %s: %w", m.Name, err)
		}
	}
	return o, nil
}

// Close drops the schema and the publication.
func (o *Outbox) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o.Pool.Exec(ctx, "DROP PUBLICATION IF EXISTS "+outboxschema.Quote(o.Publication))
	o.Pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+outboxschema.Quote(o.Schema)+" CASCADE")
	o.Pool.Close()
}
