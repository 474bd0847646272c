// Command orders-consumer is an example consumer of the events that the
// example orders service (examples/orders) writes and `outbox relay`
// delivers to NATS JetStream. It keeps per-customer totals in its own
// database and applies every event exactly once with sdk/inbox: the event id
// is recorded in the same transaction as the totals, so a redelivered event
// is skipped.
//
// It reads the stream with a durable pull consumer (explicit acks: a message
// is acknowledged only after its transaction committed, and redelivered
// otherwise). With --replay it then reads the whole stream a second time, as
// a redelivery of every message would, to show that nothing is applied
// twice. With --idle it stops after that long without messages.
//
// The database is DATABASE_URL; install the inbox first with `outbox migrate
// inbox up --schema SCHEMA`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outbox/sdk/inbox"
)

type options struct {
	databaseURL                       string
	natsURL, stream, subject, durable string
	schema, name                      string
	idle                              time.Duration
	replay, deleteStream              bool
}

func main() {
	var o options
	o.databaseURL = os.Getenv("DATABASE_URL")
	flag.StringVar(&o.natsURL, "nats-url", envOr("NATS_URL", nats.DefaultURL), "NATS server (default $NATS_URL, else nats://127.0.0.1:4222)")
	flag.StringVar(&o.stream, "stream", "ORDERS", "JetStream stream the relay publishes into")
	flag.StringVar(&o.subject, "subject", "orders.>", "subjects to consume")
	flag.StringVar(&o.durable, "durable", "orders-consumer", "name of the durable JetStream consumer")
	flag.StringVar(&o.schema, "schema", "orders_consumer", "schema of the inbox and the consumer's tables")
	flag.StringVar(&o.name, "name", "orders-consumer", "consumer name recorded in the inbox")
	flag.DurationVar(&o.idle, "idle", 0, "stop after this long without messages (0: run until SIGINT/SIGTERM)")
	flag.BoolVar(&o.replay, "replay", false, "then read the whole stream again, as a redelivery would: nothing is applied twice")
	flag.BoolVar(&o.deleteStream, "delete-stream", false, "delete the stream and exit (to clean up after a demo)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orders-consumer:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, o options, out io.Writer) error {
	nc, err := nats.Connect(o.natsURL, nats.Name("orders-consumer"))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", o.natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if o.deleteStream {
		if err := js.DeleteStream(ctx, o.stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("delete stream %s: %w", o.stream, err)
		}
		return nil
	}

	pool, err := pgxpool.New(ctx, o.databaseURL)
	if err != nil {
		return fmt.Errorf("database: %w (set DATABASE_URL)", err)
	}
	defer pool.Close()
	c, err := newConsumer(ctx, pool, o.schema, o.name)
	if err != nil {
		return err
	}
	if err := waitForStream(ctx, js, o.stream, 30*time.Second); err != nil {
		return err
	}
	durable, err := js.CreateOrUpdateConsumer(ctx, o.stream, jetstream.ConsumerConfig{
		Durable:       o.durable,
		FilterSubject: o.subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", o.durable, o.stream, err)
	}
	fmt.Fprintf(out, "== consuming %s from stream %s (durable consumer %s)\n", o.subject, o.stream, o.durable)
	applied, skipped, err := consume(ctx, c, durable, true, o.idle, out)
	fmt.Fprintf(out, "== %d applied, %d skipped as already applied\n", applied, skipped)
	if err != nil {
		return err
	}
	if o.replay && ctx.Err() == nil {
		ordered, err := js.OrderedConsumer(ctx, o.stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{o.subject}})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "== reading the whole stream again, as if every message were redelivered\n")
		applied, skipped, err := consume(ctx, c, ordered, false, o.idle, out)
		fmt.Fprintf(out, "== %d applied, %d skipped as already applied\n", applied, skipped)
		if err != nil {
			return err
		}
	}
	totals, err := c.customerTotals(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "== customer totals (%s)\n", c.totals)
	printTotals(out, totals)
	return nil
}

func waitForStream(ctx context.Context, js jetstream.JetStream, stream string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := js.Stream(ctx, stream)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) || time.Now().After(deadline) {
			return fmt.Errorf("stream %s: %w (the relay's nats sink creates it when it starts)", stream, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// consume handles messages until ctx ends or, with idle > 0, no message came
// for that long. With ack, each message is acknowledged after its
// transaction committed (and negatively acknowledged on an error, so
// JetStream redelivers it).
func consume(ctx context.Context, c *consumer, cons jetstream.Consumer, ack bool, idle time.Duration, out io.Writer) (applied, skipped int, err error) {
	last := time.Now()
	wait := time.Second
	if idle > 0 {
		wait = min(wait, idle)
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(wait))
		if err != nil {
			return applied, skipped, err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			h, err := c.handle(ctx, msg.Headers(), msg.Data())
			switch {
			case errors.Is(err, inbox.ErrNotAnEvent):
				fmt.Fprintf(out, "rejected  %s: %v\n", msg.Subject(), err)
				if ack {
					msg.Term() // never applicable: do not redeliver
				}
			case err != nil:
				fmt.Fprintf(out, "failed    %v (it will be redelivered)\n", err)
				if ack {
					msg.NakWithDelay(time.Second)
				}
			default:
				if ack {
					if err := msg.DoubleAck(ctx); err != nil {
						// Committed but not acknowledged: the redelivery is skipped by the inbox.
						fmt.Fprintf(out, "ack failed for %s: %v\n", h.env.ID, err)
					}
				}
				if h.applied {
					applied++
					fmt.Fprintf(out, "applied   %-16s %s\n", h.env.EventType, h.summary)
				} else {
					skipped++
					fmt.Fprintf(out, "skipped   %-16s %s %s (already applied)\n", h.env.EventType, h.env.AggregateID, h.env.ID)
				}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			return applied, skipped, err
		}
		if n > 0 {
			last = time.Now()
		} else if idle > 0 && time.Since(last) >= idle {
			break
		}
	}
	return applied, skipped, nil
}
