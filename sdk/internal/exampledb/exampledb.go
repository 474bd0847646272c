// Package exampledb gives the SDK's runnable examples (example_test.go files
// with "// Output:") a real, freshly migrated outbox, and skips them, like the
// tests, when no PostgreSQL is configured.
package exampledb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/migrations"
)

const env = "OUTBOX_TEST_DATABASE_URL"

func available() error {
	u := os.Getenv(env)
	if u == "" {
		return fmt.Errorf("%s is not set", env)
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

// Main runs a package's tests and examples. Without a database it skips the
// examples (which cannot skip themselves) and says how to start one, unless
// OUTBOX_TEST_REQUIRE_SERVICES=1, where they run and fail.
func Main(m interface{ Run() int }) {
	flag.Parse()
	if err := available(); err != nil && os.Getenv("OUTBOX_TEST_REQUIRE_SERVICES") != "1" {
		fmt.Fprintf(os.Stderr, "examples skipped: PostgreSQL not available (%v): start it with `scripts/services.sh up` and export `scripts/services.sh env`\n", err)
		skip := "^Example"
		if f := flag.Lookup("test.skip"); f != nil && f.Value.String() != "" {
			skip += "|" + f.Value.String()
		}
		flag.Set("test.skip", skip)
	}
	os.Exit(m.Run())
}

// Outbox is a migrated outbox in a schema of its own.
type Outbox struct {
	Pool   *pgxpool.Pool
	Schema string
	pub    string
}

// New migrates a fresh outbox schema. It panics on failure: an example has no
// other way to fail.
func New() *Outbox {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv(env))
	if err != nil {
		panic(err)
	}
	var b [6]byte
	rand.Read(b[:])
	o := &Outbox{Pool: pool, Schema: "ex_" + hex.EncodeToString(b[:])}
	o.pub = o.Schema + "_pub"
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	m, err := migrations.New(db, &migrations.Config{Schema: o.Schema, Publication: o.pub})
	if err != nil {
		panic(err)
	}
	if _, err := m.Up(ctx); err != nil {
		panic(err)
	}
	return o
}

// Close drops the schema and the publication.
func (o *Outbox) Close() {
	ctx := context.Background()
	o.Pool.Exec(ctx, "DROP PUBLICATION IF EXISTS "+o.pub)
	o.Pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+o.Schema+" CASCADE")
	o.Pool.Close()
}
