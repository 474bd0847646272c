package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/internal/testutil"
)

// TestPruneDoesNotBlockWritersOrRelay prunes 200,000 delivered rows while a
// writer commits new events and the relay delivers them. It checks that no
// batch statement runs long, that the writer's commits never wait long, that
// the prune holds no table lock stronger than ROW EXCLUSIVE on the events
// table (the mode that conflicts with neither INSERT nor UPDATE), and that the
// relay keeps delivering during the prune.
func TestPruneDoesNotBlockWritersOrRelay(t *testing.T) {
	t.Parallel()
	const oldRows = 200_000
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	tbl := o.Schema + ".events"
	start := time.Now()
	if _, err := o.Pool.Exec(ctx, `INSERT INTO `+tbl+` (aggregate_type, aggregate_id, event_type, payload, created_at, delivered_at)
	  SELECT 'order', 'old-' || i, 'order.created', convert_to(repeat('x', 200), 'UTF8'),
	    now() - interval '30 days' + i * interval '1 second', now() - interval '29 days'
	  FROM generate_series(1, $1) AS i`, oldRows); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Pool.Exec(ctx, `ANALYZE `+tbl); err != nil {
		t.Fatal(err)
	}
	t.Logf("inserted %d delivered rows in %s", oldRows, time.Since(start).Round(time.Millisecond))

	cfg, _, _ := natsConfig(t, o, "")
	relay := startRelay(t, cfg)
	relay.waitLog("streaming started", 60*time.Second)

	// A writer: one event per transaction, measuring each commit.
	var (
		writerStop    = make(chan struct{})
		writerDone    = make(chan struct{})
		maxCommit     atomic.Int64
		committed     atomic.Int64
		writerErr     error
		duringPrune   atomic.Int64
		pruneRunning  atomic.Bool
		lockMu        sync.Mutex
		pruneLocks    = map[string]bool{}
		lockSamples   int
		lockWaitsSeen int
	)
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-writerStop:
				return
			default:
			}
			t0 := time.Now()
			_, err := o.Pool.Exec(ctx, `INSERT INTO `+tbl+` (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', $1, 'order.created', '{}')`, fmt.Sprintf("new-%d", i))
			if err != nil {
				writerErr = err
				return
			}
			d := time.Since(t0)
			for {
				m := maxCommit.Load()
				if int64(d) <= m || maxCommit.CompareAndSwap(m, int64(d)) {
					break
				}
			}
			committed.Add(1)
			if pruneRunning.Load() {
				duringPrune.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	// A sampler: the locks the prune's session holds on the events table, and
	// whether anyone waits for a lock on it.
	samplerStop := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for {
			select {
			case <-samplerStop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			rows, err := o.Pool.Query(ctx, `SELECT l.mode, l.granted, coalesce(a.application_name, '')
			  FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
			  WHERE l.locktype = 'relation' AND l.relation = $1::regclass`, tbl)
			if err != nil {
				continue
			}
			lockMu.Lock()
			lockSamples++
			for rows.Next() {
				var mode, app string
				var granted bool
				rows.Scan(&mode, &granted, &app)
				if app == "outbox prune" {
					pruneLocks[mode] = true
				}
				if !granted {
					lockWaitsSeen++
				}
			}
			lockMu.Unlock()
			rows.Close()
		}
	}()

	time.Sleep(500 * time.Millisecond) // the writer and relay are in their stride
	var pruneStart, pruneEnd time.Time
	o.Pool.QueryRow(ctx, "SELECT now()").Scan(&pruneStart)
	pruneRunning.Store(true)
	res := run(t, nil, "prune", "--database-url", o.DatabaseURL, "--schema", o.Schema, "--older-than", "7d", "--batch-size", "1000", "--json")
	pruneRunning.Store(false)
	o.Pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&pruneEnd)
	time.Sleep(300 * time.Millisecond)
	close(writerStop)
	<-writerDone
	close(samplerStop)
	<-samplerDone
	if writerErr != nil {
		t.Fatalf("writer: %v", writerErr)
	}
	if res.code != 0 {
		t.Fatalf("prune: exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	var out struct {
		Deleted         int64   `json:"deleted"`
		Batches         int     `json:"batches"`
		MaxBatchSeconds float64 `json:"max_batch_seconds"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("prune --json: %v\n%s", err, res.stdout)
	}
	maxBatch := time.Duration(out.MaxBatchSeconds * float64(time.Second))
	pruneDur := pruneEnd.Sub(pruneStart)

	// Every new event is delivered, and some were delivered during the prune.
	waitDelivered(t, o, 60*time.Second)
	var deliveredDuring, left, newRows int64
	o.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE delivered_at BETWEEN $1 AND $2), count(*) FILTER (WHERE aggregate_id LIKE 'old-%'),
	  count(*) FILTER (WHERE aggregate_id LIKE 'new-%') FROM `+tbl, pruneStart, pruneEnd).Scan(&deliveredDuring, &left, &newRows)

	lockMu.Lock()
	modes := slices.Sorted(maps.Keys(pruneLocks))
	lockMu.Unlock()
	t.Logf("prune: %d rows in %d batches, %s in all; longest batch statement %s", out.Deleted, out.Batches, pruneDur.Round(time.Millisecond), maxBatch.Round(time.Microsecond))
	t.Logf("writer: %d commits (%d during the prune), longest commit %s", committed.Load(), duringPrune.Load(), time.Duration(maxCommit.Load()).Round(time.Microsecond))
	t.Logf("relay: %d events delivered during the prune; prune's locks on the events table: %v (%d samples); lock waits seen: %d", deliveredDuring, modes, lockSamples, lockWaitsSeen)

	if out.Deleted != oldRows || left != 0 {
		t.Errorf("deleted %d, %d old rows left; want %d deleted, none left", out.Deleted, left, oldRows)
	}
	if newRows != committed.Load() {
		t.Errorf("%d new rows left, want all %d the writer committed (prune must not delete them)", newRows, committed.Load())
	}
	if maxBatch <= 0 || maxBatch > 2*time.Second {
		t.Errorf("longest batch statement %s, want under 2s", maxBatch)
	}
	if mc := time.Duration(maxCommit.Load()); mc > 2*time.Second {
		t.Errorf("longest writer commit %s during the prune, want under 2s", mc)
	}
	if duringPrune.Load() == 0 {
		t.Error("the writer committed nothing while the prune ran")
	}
	if deliveredDuring == 0 {
		t.Error("the relay delivered nothing while the prune ran")
	}
	for _, m := range modes {
		if m != "AccessShareLock" && m != "RowShareLock" && m != "RowExclusiveLock" {
			t.Errorf("prune held %s on the events table", m)
		}
	}
	if code := relay.stop(); code != 0 {
		t.Fatalf("relay exited %d", code)
	}
}
