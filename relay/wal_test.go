package relay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink/stdout"
)

// TestIdleOutboxDoesNotPinWAL writes heavily to another table while the
// outbox is idle: the slot's confirmed position must keep up, so the WAL it
// retains stays small. It runs on a private cluster, because any long
// transaction elsewhere holds back every slot's restart_lsn.
// OUTBOX_TEST_WAL_SECONDS sets the duration (default 60).
func TestIdleOutboxDoesNotPinWAL(t *testing.T) {
	t.Parallel()
	secs := 60
	if v, err := strconv.Atoi(os.Getenv("OUTBOX_TEST_WAL_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	pg := testutil.NewPostgres(t, "checkpoint_timeout = 30s", "max_wal_size = 256MB")
	o := testutil.NewOutboxAt(t, pg.URL())
	cfg, err := relay.ParseConfig([]byte(fmt.Sprintf("database: {url: '%s', schema: %s, slot: %s, publication: %s}\nsinks: [{name: out, type: stdout}]\ndefault_route: {sink: out, destination: x}\n",
		o.DatabaseURL, o.Schema, o.Slot, o.Publication)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(cfg, map[string]relay.Sink{"out": stdout.New(io.Discard, stdout.Config{})}, &relay.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	pool, err := pgxpool.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "CREATE TABLE busy (id bigserial PRIMARY KEY, body text)"); err != nil {
		t.Fatal(err)
	}
	for !r.Health(ctx).Streaming {
		time.Sleep(20 * time.Millisecond)
	}
	var startLSN string
	pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&startLSN)
	end := time.Now().Add(time.Duration(secs) * time.Second)
	var maxRetained, maxFlushLag, written int64
	next := time.Now()
	for time.Now().Before(end) {
		if _, err := pool.Exec(ctx, "INSERT INTO busy (body) SELECT repeat('x', 200) FROM generate_series(1, 1000)"); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(next) {
			next = time.Now().Add(time.Second)
			var retained, flushLag int64
			err := pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
				pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, pg_wal_lsn_diff(pg_current_wal_lsn(), $2::pg_lsn)::bigint
				FROM pg_replication_slots WHERE slot_name = $1`, o.Slot, startLSN).Scan(&retained, &flushLag, &written)
			if err != nil {
				t.Fatal(err)
			}
			maxRetained, maxFlushLag = max(maxRetained, retained), max(maxFlushLag, flushLag)
		}
	}
	t.Logf("%ds of writes to another table, %d MiB of WAL: slot retained at most %d MiB (restart_lsn), confirmed position at most %d MiB behind",
		secs, written>>20, maxRetained>>20, maxFlushLag>>20)
	// restart_lsn only moves at running-xacts records (about every 15 s), so
	// the bound allows that much WAL, not more: an idle slot that pinned WAL
	// would retain everything written.
	if written > 0 && maxRetained > written/2 && maxRetained > 64<<20 {
		t.Errorf("the slot retained %d MiB of the %d MiB written: the idle outbox pins WAL", maxRetained>>20, written>>20)
	}
	// The confirmed position follows the server's at every status update
	// (250ms), while the walsender decodes the foreign WAL: allow about two
	// seconds' worth of it.
	perSecond := written / int64(secs)
	if bound := max(int64(64<<20), 2*perSecond); maxFlushLag > bound {
		t.Errorf("confirmed position fell %d MiB behind while the outbox was idle (bound %d MiB, %d MiB/s written)", maxFlushLag>>20, bound>>20, perSecond>>20)
	}
}

func TestFailoverSlotNeedsPostgres17(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	var ver int
	o.Pool.QueryRow(context.Background(), "SELECT current_setting('server_version_num')::int").Scan(&ver)
	if ver >= 170000 {
		t.Skip("this server has failover slots")
	}
	cfg, err := relay.ParseConfig([]byte(fmt.Sprintf("database: {url: '%s', schema: %s, slot: %s, publication: %s, failover_slot: true}\nsinks: [{name: out, type: stdout}]\ndefault_route: {sink: out, destination: x}\n",
		o.DatabaseURL, o.Schema, o.Slot, o.Publication)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(cfg, map[string]relay.Sink{"out": stdout.New(io.Discard, stdout.Config{})}, &relay.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Run(ctx)
	var fe *relay.FatalError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "PostgreSQL 17") {
		t.Fatalf("Run: %v, want a fatal error saying failover slots need PostgreSQL 17", err)
	}
}
