package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/sdk/inbox"
)

// TestMigrateInbox installs the inbox into a consumer's database with
// `outbox migrate inbox up` (and with the SQL of `outbox migrate inbox sql`),
// then uses it through sdk/inbox.
func TestMigrateInbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := testutil.DatabaseURL(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema, viaSQL := testutil.RandomName("consumer_"), testutil.RandomName("consumer_")
	t.Cleanup(func() {
		for _, s := range []string{schema, viaSQL} {
			if _, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+s+" CASCADE"); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		pool.Close()
	})

	res := run(t, nil, "migrate", "inbox", "up", "--database-url", dsn, "--schema", schema)
	if res.code != 0 || !strings.Contains(res.stdout, "created inbox") {
		t.Fatalf("migrate inbox up: exit %d\nstdout %s\nstderr %s", res.code, res.stdout, res.stderr)
	}
	// Again, with DATABASE_URL instead of the flag: nothing to do.
	res = run(t, []string{"DATABASE_URL=" + dsn}, "migrate", "inbox", "up", "--schema", schema, "--json")
	var st struct {
		Schema, Table string
		Created       bool
	}
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &st) != nil || st.Created || st.Schema != schema || st.Table != "inbox" {
		t.Fatalf("second migrate inbox up: exit %d, stdout %q, stderr %s", res.code, res.stdout, res.stderr)
	}

	// The table works with sdk/inbox: an event is applied once.
	ib, err := inbox.New(&inbox.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.Must(uuid.NewV7())
	applied := 0
	for range 2 {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := inbox.Handle(ctx, ib, tx, "shipping", id, func(context.Context, pgx.Tx) error { applied++; return nil })
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if applied != 1 {
		t.Fatalf("applied %d times, want once", applied)
	}

	// `migrate inbox sql` needs no database; its output creates the same table.
	res = run(t, []string{"DATABASE_URL=postgres://127.0.0.1:1/nowhere"}, "migrate", "inbox", "sql", "--schema", viaSQL)
	if res.code != 0 || !strings.Contains(res.stdout, `CREATE TABLE IF NOT EXISTS "`+viaSQL+`".inbox`) {
		t.Fatalf("migrate inbox sql: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if _, err := pool.Exec(ctx, res.stdout); err != nil {
		t.Fatalf("apply the printed SQL: %v", err)
	}
	ib2, _ := inbox.New(&inbox.Config{Schema: viaSQL})
	if ok, err := ib2.Processed(ctx, pool, "shipping", id); err != nil || ok {
		t.Fatalf("Processed on the SQL-made inbox: %v, %v", ok, err)
	}
	down := run(t, nil, "migrate", "inbox", "sql", "--down", "--schema", viaSQL)
	if down.code != 0 || strings.TrimSpace(down.stdout) != `DROP TABLE IF EXISTS "`+viaSQL+`".inbox;` {
		t.Fatalf("migrate inbox sql --down: exit %d %q", down.code, down.stdout)
	}

	for _, args := range [][]string{
		{"migrate", "inbox", "up", "--schema", "Bad-Schema", "--database-url", dsn},
		{"migrate", "inbox", "sql", "--schema", "1abc"},
		{"migrate", "inbox", "up", "--database-url", "::not a url::"},
		{"migrate", "inbox", "nope"},
	} {
		if res := run(t, nil, args...); res.code != 2 || !strings.Contains(res.stderr, "outbox: ") {
			t.Errorf("%v: exit %d, want 2; stderr %s", args, res.code, res.stderr)
		}
	}
}
