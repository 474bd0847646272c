// Package testutil finds the real services the tests talk to and gives each test
// its own outbox schema, publication and slot, so tests can run in parallel.
//
// Each service is found by its environment variable (OUTBOX_TEST_DATABASE_URL,
// OUTBOX_TEST_NATS_URL, OUTBOX_TEST_AMQP_URL, OUTBOX_TEST_REDIS_URL), then at its
// usual localhost address. When it is missing the test is skipped with the
// command that starts it; with OUTBOX_TEST_REQUIRE_SERVICES=1 (set by `make
// test`) a missing service fails the test instead, so CI never passes by skipping.
package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/migrations"
)

const startHint = "start the services with `scripts/services.sh up` and export the variables `scripts/services.sh env` prints (or run `make test`)"

// missing skips or fails the test for a service that cannot be found.
func missing(t testing.TB, service, env string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s not available (%v): set %s or %s", service, err, env, startHint)
	if os.Getenv("OUTBOX_TEST_REQUIRE_SERVICES") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func reachable(rawURL, defPort string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), defPort)
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// serviceURL finds a service: its environment variable, else its usual
// localhost address when something answers there, else a container
// (testcontainers-go) when a Docker engine answers, else it skips (or fails).
func serviceURL(t testing.TB, service, env, def, defPort, container string) string {
	t.Helper()
	if u := os.Getenv(env); u != "" {
		if err := reachable(u, defPort); err != nil {
			missing(t, service, env, err)
		}
		return u
	}
	err := reachable(def, defPort)
	if err == nil {
		return def
	}
	u, cerr := fromContainer(container)
	if cerr != nil {
		missing(t, service, env, fmt.Errorf("%v; %v", err, cerr))
	}
	return u
}

// NATSURL returns the URL of a NATS server with JetStream.
func NATSURL(t testing.TB) string {
	return serviceURL(t, "NATS", "OUTBOX_TEST_NATS_URL", "nats://127.0.0.1:4222", "4222", "nats")
}

// AMQPURL returns the URL of a RabbitMQ server.
func AMQPURL(t testing.TB) string {
	return serviceURL(t, "RabbitMQ", "OUTBOX_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "5672", "rabbitmq")
}

// RedisURL returns the URL of a Redis server.
func RedisURL(t testing.TB) string {
	return serviceURL(t, "Redis", "OUTBOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", "6379", "redis")
}

// DatabaseURL returns the URL of a PostgreSQL database with wal_level=logical.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("OUTBOX_TEST_DATABASE_URL")
	if u == "" {
		// The machine's own PostgreSQL rarely runs with wal_level=logical, so
		// there is no localhost default: a container, or skip.
		cu, err := fromContainer("postgres")
		if err != nil {
			missing(t, "PostgreSQL", "OUTBOX_TEST_DATABASE_URL", fmt.Errorf("OUTBOX_TEST_DATABASE_URL is not set; %v", err))
		}
		u = cu
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		missing(t, "PostgreSQL", "OUTBOX_TEST_DATABASE_URL", err)
	}
	defer conn.Close(ctx)
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		t.Fatalf("testutil: SHOW wal_level: %v", err)
	}
	if level != "logical" {
		missing(t, "PostgreSQL with wal_level=logical", "OUTBOX_TEST_DATABASE_URL", fmt.Errorf("wal_level is %q", level))
	}
	return u
}

// RandomName returns prefix followed by 12 random hex digits: a valid schema,
// slot or publication name.
func RandomName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Outbox is a migrated outbox of one test.
type Outbox struct {
	DatabaseURL string
	Schema      string
	Publication string
	Slot        string
	Pool        *pgxpool.Pool
}

// NewOutbox creates a fresh schema with the outbox migrated into it, a
// publication and a slot name of its own, and removes all of them (the slot too,
// if a relay created it) when the test ends.
func NewOutbox(t testing.TB) *Outbox {
	t.Helper()
	return NewOutboxAt(t, DatabaseURL(t))
}

// NewOutboxAt is NewOutbox in the database at dsn (a private cluster, say).
func NewOutboxAt(t testing.TB, dsn string) *Outbox {
	t.Helper()
	name := RandomName("t_")
	o := &Outbox{DatabaseURL: dsn, Schema: name, Publication: name + "_pub", Slot: name + "_slot"}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatalf("testutil: connect: %v", err)
	}
	o.Pool = pool
	db := stdlib.OpenDBFromPool(pool)
	m, err := migrations.New(db, &migrations.Config{Schema: o.Schema, Publication: o.Publication})
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatalf("testutil: migrate: %v", err)
	}
	db.Close()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		DropSlot(t, pool, o.Slot)
		for _, q := range []string{
			"DROP PUBLICATION IF EXISTS " + o.Publication,
			"DROP SCHEMA IF EXISTS " + o.Schema + " CASCADE",
		} {
			if _, err := pool.Exec(ctx, q); err != nil {
				t.Errorf("testutil: cleanup %q: %v", q, err)
			}
		}
		pool.Close()
	})
	return o
}

// DropSlot drops a replication slot if it exists, waiting for its walsender to go.
func DropSlot(t testing.TB, pool *pgxpool.Pool, slot string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "is active") || ctx.Err() != nil {
			t.Errorf("testutil: drop slot %s: %v", slot, err)
			return
		}
		// A relay's walsender may take a moment to exit after the relay stopped.
		pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		time.Sleep(100 * time.Millisecond)
	}
}
