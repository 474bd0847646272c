package handler_test

import (
	"context"
	"errors"
	"log"
	"os"
	"os/signal"

	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/handler"
)

// A program that runs the relay in-process and handles order events itself,
// without a relay.yaml or a broker. (Not run: it needs a database.)
func Example() {
	h, err := handler.New(&handler.Config{Concurrency: 4})
	if err != nil {
		log.Fatal(err)
	}
	// Synchronous: the return value is the outcome.
	h.Handle("order.placed", func(ctx context.Context, m *sink.Message) error {
		if len(m.Event.Payload) == 0 {
			return sink.MarkPermanent(errors.New("empty order")) // dead-lettered at once
		}
		log.Printf("order %s placed (attempt %d)", m.Event.AggregateID, m.Attempt)
		return nil // an error here is retried with the route's backoff
	})
	// Asynchronous: the outcome is reported later through done.
	h.HandleAsync("order.*", func(ctx context.Context, m *sink.Message, done func(error)) {
		go func() { done(nil) }()
	})

	cfg, err := relay.NewConfig(relay.Config{
		Database: relay.DatabaseConfig{URL: os.Getenv("DATABASE_URL"), Schema: "app"},
		Routes:   []relay.RouteConfig{{Name: "orders", Match: "order.*", Sink: "orders"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	r, err := relay.New(cfg, map[string]sink.Sink{"orders": h}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := r.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
