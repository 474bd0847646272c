package bench

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// SDKResult is what one Write costs a business transaction.
type SDKResult struct {
	// Per-transaction time on one connection, BEGIN to COMMIT returned.
	TxMean, TxP50           time.Duration
	WithWriteMean, WithP50  time.Duration
	WriteStatements         int // statements a Write adds to the transaction
	WriteRoundTrips         int // round trips a Write adds
	BatchStatements         int // statements of one WriteBatch of 100
	BatchRoundTrips         int // round trips of one WriteBatch of 100
	Iterations              int
	BusinessStatement       string
	BusinessTxStatements    int
	BusinessTxRoundTrips    int
	WithWriteTxStatements   int
	WithWriteTxRoundTrips   int
	WriteBatchTxStatements  int
	WriteBatchTxRoundTrips  int
	WriteStatementsExpected int
}

// counters count the statements pgx sends (tracer) and the writes to the
// socket (each a request the client then waits on: a round trip).
type counters struct {
	statements atomic.Int64
	writes     atomic.Int64
}

func (c *counters) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.statements.Add(1)
	return ctx
}
func (c *counters) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *counters) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (c *counters) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	c.statements.Add(1)
}
func (c *counters) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

type countingConn struct {
	net.Conn
	c *counters
}

func (cc *countingConn) Write(b []byte) (int, error) {
	cc.c.writes.Add(1)
	return cc.Conn.Write(b)
}

func (c *counters) snapshot() (int, int) { return int(c.statements.Load()), int(c.writes.Load()) }

// measureSDK counts the statements and round trips of Write and
// WriteBatch(100) inside a business transaction, and times a business
// transaction with and without one Write.
func measureSDK(ctx context.Context, dbURL, schema string, w *sdk.Writer, l *load, iterations int) (*SDKResult, error) {
	table := outboxschema.Quote(schema) + ".bench_orders"
	business := "INSERT INTO " + table + " (customer, total, body) VALUES ($1, $2, $3)"
	res := &SDKResult{Iterations: iterations, BusinessStatement: business, WriteStatementsExpected: 1}

	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	cnt := &counters{}
	cfg.Tracer = cnt
	dialer := &net.Dialer{KeepAlive: 5 * time.Minute}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, c: cnt}, nil
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+table+
		" (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric(12,2) NOT NULL, body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		return nil, err
	}
	body := `{"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"benchmark order"}`
	// tx runs one business transaction; mode 0: business only, 1: + Write,
	// 2: + WriteBatch(100). It returns the statements and round trips
	// between BEGIN and COMMIT and the time from BEGIN to COMMIT returned.
	var evs []sdk.Event
	tx := func(c *pgx.Conn, mode int) (stmts, trips int, d time.Duration, err error) {
		t0 := time.Now()
		t, err := c.Begin(ctx)
		if err != nil {
			return 0, 0, 0, err
		}
		defer t.Rollback(ctx)
		s0, w0 := cnt.snapshot()
		if _, err := t.Exec(ctx, business, "customer-42", "99.50", body); err != nil {
			return 0, 0, 0, err
		}
		switch mode {
		case 1:
			e := l.event(l.seq.Add(1) - 1)
			err = w.Write(l.ctx(ctx), t, &e)
		case 2:
			evs = evs[:0]
			base := l.seq.Add(100) - 100
			for i := range int64(100) {
				evs = append(evs, l.event(base+i))
			}
			err = w.WriteBatch(l.ctx(ctx), t, evs)
		}
		if err != nil {
			return 0, 0, 0, err
		}
		s1, w1 := cnt.snapshot()
		if err := t.Commit(ctx); err != nil {
			return 0, 0, 0, err
		}
		return s1 - s0, w1 - w0, time.Since(t0), nil
	}
	// Warm the statement cache (a statement's first use also prepares it).
	for range 3 {
		for mode := range 3 {
			if _, _, _, err := tx(conn, mode); err != nil {
				return nil, fmt.Errorf("sdk check: %w", err)
			}
		}
	}
	for mode := range 3 {
		s, r, _, err := tx(conn, mode)
		if err != nil {
			return nil, fmt.Errorf("sdk check: %w", err)
		}
		switch mode {
		case 0:
			res.BusinessTxStatements, res.BusinessTxRoundTrips = s, r
		case 1:
			res.WithWriteTxStatements, res.WithWriteTxRoundTrips = s, r
		case 2:
			res.WriteBatchTxStatements, res.WriteBatchTxRoundTrips = s, r
		}
	}
	res.WriteStatements = res.WithWriteTxStatements - res.BusinessTxStatements
	res.WriteRoundTrips = res.WithWriteTxRoundTrips - res.BusinessTxRoundTrips
	res.BatchStatements = res.WriteBatchTxStatements - res.BusinessTxStatements
	res.BatchRoundTrips = res.WriteBatchTxRoundTrips - res.BusinessTxRoundTrips

	// Timing, alternating blocks so that drift hits both sides alike.
	var without, with []time.Duration
	for len(without) < iterations {
		for mode := range 2 {
			for range 25 {
				_, _, d, err := tx(conn, mode)
				if err != nil {
					return nil, fmt.Errorf("sdk timing: %w", err)
				}
				if mode == 0 {
					without = append(without, d)
				} else {
					with = append(with, d)
				}
			}
		}
	}
	mean := func(s []time.Duration) time.Duration {
		var t time.Duration
		for _, d := range s {
			t += d
		}
		return t / time.Duration(len(s))
	}
	p50 := func(s []time.Duration) time.Duration {
		s = slices.Clone(s)
		slices.Sort(s)
		return s[len(s)/2]
	}
	res.TxMean, res.TxP50 = mean(without), p50(without)
	res.WithWriteMean, res.WithP50 = mean(with), p50(with)
	return res, nil
}
