package migrations_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/migrations"
)

func TestUpDownStatusConcurrent(t *testing.T) {
	t.Parallel()
	dsn := testutil.DatabaseURL(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close) // after the cleanup below (cleanups run last-in first-out)
	schema := testutil.RandomName("mig_")
	cfg := &migrations.Config{Schema: schema, Publication: schema + "_pub"}
	t.Cleanup(func() {
		for _, q := range []string{"DROP PUBLICATION IF EXISTS " + cfg.Publication, "DROP SCHEMA IF EXISTS " + schema + " CASCADE"} {
			if _, err := pool.Exec(ctx, q); err != nil {
				t.Errorf("cleanup: %s: %v", q, err)
			}
		}
	})

	// Two migrators at once: each version is applied exactly once, neither fails.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	applied := make([]int, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := stdlib.OpenDBFromPool(pool)
			defer db.Close()
			m, err := migrations.New(db, cfg)
			if err != nil {
				errs[i] = err
				return
			}
			res, err := m.Up(ctx)
			errs[i] = err
			applied[i] = len(res)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent up: %v", err)
		}
	}
	if got := applied[0] + applied[1]; got != int(migrations.Latest()) {
		t.Fatalf("versions applied by both migrators = %d, want %d", got, migrations.Latest())
	}

	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	m, err := migrations.New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.Applied {
			t.Errorf("version %d not applied after up", s.Version)
		}
	}
	var pubInsert, pubUpdate bool
	if err := pool.QueryRow(ctx, "SELECT pubinsert, pubupdate FROM pg_publication WHERE pubname = $1", cfg.Publication).Scan(&pubInsert, &pubUpdate); err != nil {
		t.Fatalf("publication: %v", err)
	}
	if !pubInsert || pubUpdate {
		t.Errorf("publication publishes insert=%v update=%v, want inserts only", pubInsert, pubUpdate)
	}
	// A plain hand-written INSERT gets every default.
	if _, err := pool.Exec(ctx, `INSERT INTO `+schema+`.events (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', '1', 'order.created', '{"a":1}')`); err != nil {
		t.Fatalf("plain insert: %v", err)
	}
	var version, ctype, id string
	if err := pool.QueryRow(ctx, `SELECT schema_version, content_type, id::text FROM `+schema+`.events`).Scan(&version, &ctype, &id); err != nil {
		t.Fatal(err)
	}
	if version != "1.0" || ctype != "application/json" || id[14] != '7' {
		t.Errorf("defaults: version %q content type %q id %s (want 1.0, application/json, a v7 uuid)", version, ctype, id)
	}

	// Marking rows delivered, as the relay does (one statement over many
	// ids), must be a HOT update for every row: no index entry written.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+schema+`.events (aggregate_type, aggregate_id, event_type, payload, headers)
		SELECT 'order', (g % 100)::text, 'order.created', convert_to(repeat('x', 300), 'UTF8'),
		       '{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
		FROM generate_series(1, 2000) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE `+schema+`.events SET delivered_at = now() WHERE id = ANY(ARRAY(SELECT id FROM `+schema+`.events))`); err != nil {
		t.Fatal(err)
	}
	var upd, hot int64
	if err := tx.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE schemaname = $1 AND relname = 'events'`, schema).Scan(&upd, &hot); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	if upd != 2001 || hot != upd {
		t.Errorf("marking 2001 rows: %d updated, %d of them HOT; want every one HOT (fillfactor)", upd, hot)
	}

	// seq numbers rows in insertion order, also those inserted by one
	// statement, with nothing but INSERT on the table (an identity column).
	if _, err := pool.Exec(ctx, `INSERT INTO `+schema+`.events (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'k', '1', 'e', int4send(g) FROM generate_series(1, 500) g`); err != nil {
		t.Fatal(err)
	}
	var unordered int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT seq, lag(seq) OVER (ORDER BY get_byte(payload, 2) * 256 + get_byte(payload, 3)) AS prev
		FROM `+schema+`.events WHERE aggregate_type = 'k') s WHERE prev >= seq OR seq IS NULL`).Scan(&unordered); err != nil {
		t.Fatal(err)
	}
	if unordered != 0 {
		t.Errorf("%d rows of one INSERT have a seq not above the row inserted before them", unordered)
	}
	// Down to version 1 and up again.
	if _, err := m.Down(ctx, 1); err != nil {
		t.Fatalf("down to 1: %v", err)
	}
	var hasSeq bool
	pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'events' AND column_name = 'seq')`, schema).Scan(&hasSeq)
	if hasSeq {
		t.Error("seq still there after down to version 1")
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.events WHERE seq IS NULL`).Scan(&unordered); err != nil || unordered != 0 {
		t.Errorf("rows without a seq after up again: %d (%v)", unordered, err)
	}

	res, err := m.Down(ctx, 0)
	if err != nil {
		t.Fatalf("down: %v", err)
	}
	if len(res) != int(migrations.Latest()) {
		t.Errorf("down rolled back %d versions, want %d", len(res), migrations.Latest())
	}
	var n int
	pool.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'events'", schema).Scan(&n)
	if n != 0 {
		t.Error("events table still there after down")
	}
}

func TestSQL(t *testing.T) {
	up, err := migrations.SQL(&migrations.Config{Schema: "billing"}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`CREATE TABLE "billing".events`, `CREATE PUBLICATION "outbox_events"`, `publish = 'insert'`,
		`ALTER TABLE "billing".events ADD COLUMN seq bigint GENERATED BY DEFAULT AS IDENTITY`} {
		if !strings.Contains(up, want) {
			t.Errorf("up SQL lacks %q", want)
		}
	}
	if strings.Contains(up, "+goose") || strings.Contains(up, "DROP TABLE") {
		t.Error("up SQL contains goose annotations or down statements")
	}
	down, err := migrations.SQL(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(down, `DROP TABLE IF EXISTS "outbox".events`) {
		t.Errorf("down SQL:\n%s", down)
	}
	if _, err := migrations.SQL(&migrations.Config{Schema: `x"; drop`}, false); err == nil {
		t.Error("bad schema name accepted")
	}
}
