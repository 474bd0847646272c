package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outbox/examples/orders/events"
	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay/sink"
	natssink "github.com/outboxrelay/outbox/relay/sink/nats"
	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/inbox"
)

// setup makes a consumer schema with the inbox installed.
func setup(t *testing.T) (dsn, schema string, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	dsn = testutil.DatabaseURL(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema = testutil.RandomName("consumer_")
	t.Cleanup(func() {
		pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		pool.Close()
	})
	ib, err := inbox.New(&inbox.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := ib.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return dsn, schema, pool
}

// relayed returns v as the NATS message the relay publishes for it.
func relayed(t *testing.T, subject string, v sdk.Versioned, orderID string) *nats.Msg {
	t.Helper()
	e, err := sdk.NewEvent(events.AggregateType, orderID, v)
	if err != nil {
		t.Fatal(err)
	}
	ev := &sink.Event{ID: uuid.Must(uuid.NewV7()), AggregateType: e.AggregateType, AggregateID: e.AggregateID, EventType: e.EventType,
		SchemaVersion: e.SchemaVersion, Payload: e.Payload, ContentType: e.ContentType, OccurredAt: time.Now()}
	m := natssink.Message(&sink.Message{Event: ev, Route: "orders", Destination: subject + "." + e.EventType, Source: "/outbox/test"})
	m.Header.Set("Nats-Msg-Id", ev.ID.String())
	return m
}

// workload is a few orders' events: 3 placed by two customers, one paid, one cancelled.
func workload(t *testing.T, subject string) []*nats.Msg {
	t.Helper()
	items := []events.Item{{SKU: "x", Quantity: 1, PriceCents: 1000}}
	return []*nats.Msg{
		relayed(t, subject, events.OrderPlaced{OrderID: "o1", Customer: "alice", Items: items, TotalCents: 1000}, "o1"),
		relayed(t, subject, events.OrderPlaced{OrderID: "o2", Customer: "alice", Items: items, TotalCents: 2500}, "o2"),
		relayed(t, subject, events.OrderPlaced{OrderID: "o3", Customer: "bob", Items: items, TotalCents: 700}, "o3"),
		relayed(t, subject, events.OrderPaid{OrderID: "o1", Customer: "alice", AmountCents: 1000}, "o1"),
		relayed(t, subject, events.OrderCancelled{OrderID: "o3", Customer: "bob"}, "o3"),
	}
}

func checkTotals(t *testing.T, c *consumer) {
	t.Helper()
	got, err := c.customerTotals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []customerTotal{
		{Customer: "alice", Orders: 2, PlacedCents: 3500, PaidCents: 1000},
		{Customer: "bob", Orders: 1, PlacedCents: 700, Cancelled: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("totals %+v, want %+v", got, want)
	}
}

// TestExactlyOnceUnderConcurrentRedelivery hands every message to three
// workers at once: each event is applied once.
func TestExactlyOnceUnderConcurrentRedelivery(t *testing.T) {
	t.Parallel()
	_, schema, pool := setup(t)
	ctx := context.Background()
	c, err := newConsumer(ctx, pool, schema, "totals")
	if err != nil {
		t.Fatal(err)
	}
	msgs := workload(t, "orders")
	var mu sync.Mutex
	applied := map[string]int{}
	var wg sync.WaitGroup
	for range 3 {
		for _, m := range msgs {
			wg.Go(func() {
				h, err := c.handle(ctx, m.Header, m.Data)
				if err != nil {
					t.Error(err)
					return
				}
				if h.applied {
					mu.Lock()
					applied[h.env.ID.String()]++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(applied) != len(msgs) {
		t.Errorf("%d events applied, want %d", len(applied), len(msgs))
	}
	for id, n := range applied {
		if n != 1 {
			t.Errorf("event %s applied %d times", id, n)
		}
	}
	checkTotals(t, c)

	// A message that is not an outbox event is refused, never applied.
	if _, err := c.handle(ctx, nats.Header{"Content-Type": {"application/json"}}, []byte(`{}`)); !errors.Is(err, inbox.ErrNotAnEvent) {
		t.Errorf("plain message: %v, want inbox.ErrNotAnEvent", err)
	}
}

// TestRunFromJetStream publishes the messages as the relay does and runs the
// consumer with --replay: the first pass applies everything, the second
// applies nothing.
func TestRunFromJetStream(t *testing.T) {
	t.Parallel()
	dsn, schema, _ := setup(t)
	natsURL := testutil.NATSURL(t)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, prefix := strings.ToUpper(testutil.RandomName("ORDERS_")), testutil.RandomName("orders")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { js.DeleteStream(context.Background(), stream) })
	msgs := workload(t, prefix)
	for _, m := range msgs {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Something else on the subjects: rejected, and terminated so it does not come back.
	if _, err := js.Publish(ctx, prefix+".noise", []byte("hello")); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	o := options{databaseURL: dsn, natsURL: natsURL, stream: stream, subject: prefix + ".>", durable: "test",
		schema: schema, name: "totals", idle: 500 * time.Millisecond, replay: true}
	if err := run(ctx, o, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, &out)
	}
	got := out.String()
	for _, want := range []string{
		"== 5 applied, 0 skipped as already applied\n",
		"== 0 applied, 5 skipped as already applied\n",
		"applied   order.placed     alice placed o2 for $25.00",
		"rejected  " + prefix + ".noise",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "rejected"); n != 2 {
		t.Errorf("the noise message was rejected %d times, want once per pass:\n%s", n, got)
	}

	// Runs again: the durable consumer has acknowledged everything.
	out.Reset()
	o.replay = false
	if err := run(ctx, o, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "== 0 applied, 0 skipped") {
		t.Errorf("second run:\n%s", &out)
	}

	o.deleteStream = true
	if err := run(ctx, o, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctx, stream); err == nil {
		t.Errorf("stream %s still exists after --delete-stream", stream)
	}
}
