package history_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/sdk/history"
	"github.com/outboxrelay/outbox/sdk/internal/testdb"
	"github.com/outboxrelay/outbox/sdk/pgtime"
)

// TestTimestampsOfAnyYear: rows with created_at and occurred_at at the
// edges of PostgreSQL's range and ±infinity load, in order, one page at a
// time (the cursor crosses them), through pgx and database/sql.
func TestTimestampsOfAnyYear(t *testing.T) {
	t.Parallel()
	ob := testdb.New(t)
	ctx := context.Background()
	// In created_at order, with what the Record says: the lossless text
	// of created_at and occurred_at.
	rows := []struct{ created, occurred, want string }{
		{"-infinity", "infinity", "-infinity infinity"},
		{"4713-01-01 00:00:00+00 BC", "-infinity", "-004712-01-01T00:00:00Z -infinity"},
		{"0001-01-01 00:00:00+00", "294276-12-31 23:59:59.999999+00", "0001-01-01T00:00:00Z +294276-12-31T23:59:59.999999Z"},
		{"2026-03-01 12:00:00+01", "2026-03-01 12:00:00.5+00", "2026-03-01T11:00:00Z 2026-03-01T12:00:00.5Z"},
		{"294276-12-31 23:59:59.999999+00", "0001-01-01 00:00:00+00", "+294276-12-31T23:59:59.999999Z 0001-01-01T00:00:00Z"},
		{"infinity", "4713-01-01 00:00:00+00 BC", "infinity -004712-01-01T00:00:00Z"},
	}
	for i, r := range rows {
		if _, err := ob.Pool.Exec(ctx, "INSERT INTO "+ob.Schema+".events (aggregate_type, aggregate_id, event_type, payload, created_at, occurred_at) VALUES ('o', '1', $1, '\\x7b7d', $2::timestamptz, $3::timestamptz)",
			fmt.Sprint(i), r.created, r.occurred); err != nil {
			t.Fatal(err)
		}
	}
	db := stdlib.OpenDBFromPool(ob.Pool)
	defer db.Close()
	for _, h := range []struct {
		name string
		db   any
	}{{"pgx", ob.Pool}, {"database/sql", db}} {
		for _, pageSize := range []int{1, 500} {
			l, _ := history.New(&history.Config{Schema: ob.Schema, PageSize: pageSize})
			var got []history.Record
			err := l.Load(ctx, h.db, "o", "1", history.Cursor{}, func(r history.Record) error {
				got = append(got, r)
				return nil
			})
			if err != nil {
				t.Fatalf("%s, page size %d: %v", h.name, pageSize, err)
			}
			if len(got) != len(rows) {
				t.Fatalf("%s, page size %d: %d events, want %d", h.name, pageSize, len(got), len(rows))
			}
			for i, r := range got {
				text := pgtime.Format(r.CreatedAt, r.CreatedAtInf) + " " + pgtime.Format(r.OccurredAt, r.OccurredAtInf)
				if r.EventType != fmt.Sprint(i) || text != rows[i].want {
					t.Errorf("%s, page size %d: event %d is %s with %s, want %d with %s", h.name, pageSize, i, r.EventType, text, i, rows[i].want)
				}
			}
		}
	}
}
