package sdk_test

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/sdk"
)

// wire counts what a connection does: statements as pgx traces them, and
// round trips as the network sees them (a client write after a read starts a
// new round trip).
type wire struct {
	mu                         sync.Mutex
	queries, prepares, batches int
	copies, roundTrips         int
	lastWasWrite               bool
}

func (w *wire) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.queries, w.prepares, w.batches, w.copies, w.roundTrips = 0, 0, 0, 0, 0
}

func (w *wire) counts() (queries, prepares, other, roundTrips int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queries, w.prepares, w.batches + w.copies, w.roundTrips
}

func (w *wire) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	w.mu.Lock()
	w.queries++
	w.mu.Unlock()
	return ctx
}
func (w *wire) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (w *wire) TracePrepareStart(ctx context.Context, _ *pgx.Conn, _ pgx.TracePrepareStartData) context.Context {
	w.mu.Lock()
	w.prepares++
	w.mu.Unlock()
	return ctx
}
func (w *wire) TracePrepareEnd(context.Context, *pgx.Conn, pgx.TracePrepareEndData) {}
func (w *wire) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	w.mu.Lock()
	w.batches++
	w.mu.Unlock()
	return ctx
}
func (w *wire) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (w *wire) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
func (w *wire) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceCopyFromStartData) context.Context {
	w.mu.Lock()
	w.copies++
	w.mu.Unlock()
	return ctx
}
func (w *wire) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

type countingConn struct {
	net.Conn
	w *wire
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.w.mu.Lock()
	if !c.w.lastWasWrite {
		c.w.roundTrips++
		c.w.lastWasWrite = true
	}
	c.w.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.mu.Lock()
	c.w.lastWasWrite = false
	c.w.mu.Unlock()
	return n, err
}

// connConfig returns a connection config whose statements and round trips
// are counted by w.
func connConfig(t testing.TB, dsn string, mode pgx.QueryExecMode, w *wire) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tracer = w
	cfg.DefaultQueryExecMode = mode
	cfg.AfterNetConnect = func(_ context.Context, _ *pgconn.Config, conn net.Conn) (net.Conn, error) {
		return &countingConn{Conn: conn, w: w}, nil
	}
	return cfg
}

// TestOneStatementOneRoundTrip proves the SPEC 9 promise: Write adds exactly
// one statement to the transaction and WriteBatch of 100 events one round
// trip. pgx's default mode (statement cache) prepares a statement the first
// time a connection sees it: one more round trip, once per connection; the
// other modes never do.
func TestOneStatementOneRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	one := func() *sdk.Event {
		return &sdk.Event{AggregateType: "order", AggregateID: "1", EventType: "order.created", Payload: []byte(`{"total":1}`)}
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			w := &wire{}
			conn, err := pgx.ConnectConfig(ctx, connConfig(t, b.ob.DatabaseURL, mode, w))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			warm := mode == pgx.QueryExecModeExec || mode == pgx.QueryExecModeSimpleProtocol
			for call := range 3 {
				w.reset()
				if err := b.w.Write(ctx, tx, one()); err != nil {
					t.Fatal(err)
				}
				q, p, o, rt := w.counts()
				wantRT, wantP := 1, 0
				if call == 0 && !warm {
					wantRT, wantP = 2, 1
				}
				if q != 1 || o != 0 || p != wantP || rt != wantRT {
					t.Errorf("Write call %d: %d statements, %d prepares, %d batches/copies, %d round trips; want 1, %d, 0, %d", call, q, p, o, rt, wantP, wantRT)
				}
			}
			for call := range 3 {
				w.reset()
				if err := b.w.WriteBatch(ctx, tx, odd(100)); err != nil {
					t.Fatal(err)
				}
				q, p, o, rt := w.counts()
				wantRT, wantP := 1, 0
				if call == 0 && !warm {
					wantRT, wantP = 2, 1
				}
				if q != 1 || o != 0 || p != wantP || rt != wantRT {
					t.Errorf("WriteBatch(100) call %d: %d statements, %d prepares, %d batches/copies, %d round trips; want 1, %d, 0, %d", call, q, p, o, rt, wantP, wantRT)
				}
			}
		})
	}
	t.Run("database/sql", func(t *testing.T) {
		w := &wire{}
		db := stdlib.OpenDB(*connConfig(t, b.ob.DatabaseURL, pgx.QueryExecModeCacheStatement, w))
		defer db.Close()
		db.SetMaxOpenConns(1)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		for call := range 2 {
			w.reset()
			if err := b.w.Write(ctx, tx, one()); err != nil {
				t.Fatal(err)
			}
			if q, _, _, rt := w.counts(); q != 1 || (call > 0 && rt != 1) {
				t.Errorf("Write call %d: %d statements, %d round trips", call, q, rt)
			}
			w.reset()
			if err := b.w.WriteBatch(ctx, tx, odd(100)); err != nil {
				t.Fatal(err)
			}
			if q, _, _, rt := w.counts(); q != 1 || (call > 0 && rt != 1) {
				t.Errorf("WriteBatch call %d: %d statements, %d round trips", call, q, rt)
			}
		}
	})
}
