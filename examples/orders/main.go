// Command orders is an example HTTP service that publishes events through the
// transactional outbox:
//
//	POST /orders               {"customer": "alice", "items": [{"sku": "book", "quantity": 2, "price_cents": 1250}]}
//	POST /orders/{id}/pay
//	POST /orders/{id}/cancel   {"reason": "..."} (optional)
//	GET  /orders/{id}          the order rebuilt from its events (sdk/history)
//
// Each change updates the orders table and writes its event (order.placed,
// order.paid, order.cancelled; Go types in examples/orders/events) in the same
// transaction with the SDK. `outbox relay` then delivers the events;
// examples/orders-consumer applies them exactly once on the other side.
// scripts/demo-orders.sh runs the whole thing (`make demo-orders`).
//
// The database is DATABASE_URL; the outbox must be migrated (`outbox migrate
// up --schema ...`). The service creates its orders table and the history
// index (sdk/history.CreateIndex) at start.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/sdk/history"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on (port 0 picks a free one)")
	addrFile := flag.String("addr-file", "", "write the address served on to this file once listening")
	outboxSchema := flag.String("schema", "outbox", "schema of the outbox tables")
	appSchema := flag.String("app-schema", "shop", "schema of the orders table")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "orders")
	if err := run(logger, *listen, *addrFile, *outboxSchema, *appSchema); err != nil {
		logger.Error("orders stopped", "error", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger, listen, addrFile, outboxSchema, appSchema string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return fmt.Errorf("database: %w (set DATABASE_URL)", err)
	}
	defer pool.Close()
	s, err := newServer(pool, outboxSchema, appSchema, logger)
	if err != nil {
		return err
	}
	if err := s.migrate(ctx, appSchema); err != nil {
		return fmt.Errorf("create the orders table: %w", err)
	}
	if err := history.CreateIndex(ctx, pool, outboxSchema); err != nil {
		return fmt.Errorf("%w (is the outbox migrated? outbox migrate up --schema %s)", err, outboxSchema)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second}
	logger.Info("listening", "addr", "http://"+ln.Addr().String())
	if addrFile != "" {
		if err := os.WriteFile(addrFile, []byte(ln.Addr().String()), 0o644); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
