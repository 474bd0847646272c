package retention_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/internal/retention"
	"github.com/outboxrelay/outbox/internal/testutil"
)

func TestPrune(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	cutoff := time.Now().Add(-24 * time.Hour)
	// 2500 old delivered rows (deleted), 10 old undelivered (kept), 7 new
	// delivered (kept).
	_, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload, created_at, delivered_at)
	  SELECT 'order', 'o-' || i, 'order.created', '{}',
	    CASE WHEN i <= 2510 THEN $1::timestamptz - interval '1 hour' ELSE now() END,
	    CASE WHEN i BETWEEN 2501 AND 2510 THEN NULL ELSE now() END
	  FROM generate_series(1, 2517) AS i`, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	count := func(where string) int64 {
		var n int64
		if err := o.Pool.QueryRow(ctx, `SELECT count(*) FROM `+o.Schema+`.events WHERE `+where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	res, err := retention.Prune(ctx, o.Pool, retention.Options{Schema: o.Schema, Before: cutoff, DryRun: true})
	if err != nil || res.Deleted != 2500 || res.Batches != 0 || count("true") != 2517 {
		t.Fatalf("dry run: %+v, %v; rows %d", res, err, count("true"))
	}

	var batches []retention.Batch
	res, err = retention.Prune(ctx, o.Pool, retention.Options{Schema: o.Schema, Before: cutoff, BatchSize: 1000,
		OnBatch: func(b retention.Batch) { batches = append(batches, b) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 2500 || res.Batches != 3 || len(batches) != 3 || batches[0].Rows != 1000 || batches[2].Rows != 500 || res.MaxBatch <= 0 {
		t.Fatalf("prune: %+v, batches %+v", res, batches)
	}
	if n := count("delivered_at IS NULL"); n != 10 {
		t.Errorf("undelivered rows left: %d, want 10", n)
	}
	if n := count("created_at >= now() - interval '1 minute'"); n != 7 {
		t.Errorf("new rows left: %d, want 7", n)
	}
	if n := count("true"); n != 17 {
		t.Errorf("rows left: %d, want 17", n)
	}
	// Nothing left to do.
	res, err = retention.Prune(ctx, o.Pool, retention.Options{Schema: o.Schema, Before: cutoff})
	if err != nil || res.Deleted != 0 || res.Batches != 1 {
		t.Fatalf("second prune: %+v %v", res, err)
	}
}

func TestPruneUsesTIDScan(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload, created_at, delivered_at)
	  SELECT 'order', 'o-' || i, 'order.created', '{}', now() - interval '1 day' + i * interval '1 second', now()
	  FROM generate_series(1, 50000) AS i`); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Pool.Exec(ctx, `ANALYZE `+o.Schema+`.events`); err != nil {
		t.Fatal(err)
	}
	var plan strings.Builder
	rows, err := o.Pool.Query(ctx, `EXPLAIN DELETE FROM `+o.Schema+`.events WHERE ctid = ANY(ARRAY(
	  SELECT ctid FROM `+o.Schema+`.events WHERE created_at < now() - interval '12 hours' AND delivered_at IS NOT NULL LIMIT 1000))`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var line string
		rows.Scan(&line)
		plan.WriteString(line + "\n")
	}
	if !strings.Contains(plan.String(), "Tid Scan") {
		t.Errorf("the batch DELETE does not use a TID scan:\n%s", plan.String())
	}
}

func TestPruneBadOptions(t *testing.T) {
	t.Parallel()
	for _, opts := range []retention.Options{{Before: time.Now(), Schema: "Bad-Name"}, {}, {Before: time.Now(), BatchSize: -1}} {
		if _, err := retention.Prune(context.Background(), nil, opts); err == nil {
			t.Errorf("%+v accepted", opts)
		}
	}
}

// TestPruneNeedsOnlySelectAndDelete runs a prune as a role with SELECT and
// DELETE on the events table and nothing else.
func TestPruneNeedsOnlySelectAndDelete(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	role := testutil.RandomName("prune_")
	for _, q := range []string{
		"CREATE ROLE " + role,
		"GRANT USAGE ON SCHEMA " + o.Schema + " TO " + role,
		"GRANT SELECT, DELETE ON " + o.Schema + ".events TO " + role,
		`INSERT INTO ` + o.Schema + `.events (aggregate_type, aggregate_id, event_type, payload, created_at, delivered_at)
		  SELECT 'order', 'o-' || i, 'order.created', '{}', now() - interval '2 days', now() FROM generate_series(1, 30) AS i`,
	} {
		if _, err := o.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		o.Pool.Exec(context.Background(), "DROP OWNED BY "+role)
		o.Pool.Exec(context.Background(), "DROP ROLE "+role)
	})
	conn, err := o.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET ROLE "+role); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET ROLE")
	res, err := retention.Prune(ctx, conn, retention.Options{Schema: o.Schema, Before: time.Now().Add(-time.Hour), BatchSize: 7})
	if err != nil || res.Deleted != 30 {
		t.Fatalf("prune as %s: %+v, %v", role, res, err)
	}
}
