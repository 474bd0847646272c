package inbox_test

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/sdk/inbox"
	"github.com/outboxrelay/outbox/sdk/internal/exampledb"
)

// A consumer applies each event once, however often the broker delivers it.
func ExampleHandle() {
	ctx := context.Background()
	db := exampledb.New()
	defer db.Close()
	ib, _ := inbox.New(&inbox.Config{Schema: db.Schema})
	if err := ib.Migrate(ctx, db.Pool); err != nil {
		panic(err)
	}
	db.Pool.Exec(ctx, "CREATE TABLE "+db.Schema+".shipments (order_id text)")

	// A Kafka record as the relay publishes it (CloudEvents binary mode).
	headers := []inbox.KafkaHeader{
		{Key: "ce_specversion", Value: []byte("1.0")},
		{Key: "ce_id", Value: []byte("0190a6e4-7c2a-7b3e-9f00-000000000001")},
		{Key: "ce_type", Value: []byte("order.placed")},
		{Key: "ce_subject", Value: []byte("o-1")},
		{Key: "ce_aggregatetype", Value: []byte("order")},
		{Key: "content-type", Value: []byte("application/json")},
		{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
	}
	value := []byte(`{"total":250}`)

	consume := func() {
		env, err := inbox.FromKafka(headers, value)
		if err != nil {
			panic(err) // not an outbox event: dead-letter it
		}
		ctx := env.TraceContext(ctx) // continue the writer's trace
		var applied bool
		err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			applied, err = inbox.Handle(ctx, ib, tx, "shipping", env.ID, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "INSERT INTO "+db.Schema+".shipments VALUES ($1)", env.AggregateID)
				return err
			})
			return err
		})
		if err != nil {
			panic(err) // roll back and let the broker redeliver
		}
		fmt.Println(env.EventType, env.AggregateID, "applied:", applied, "trace:", trace.SpanContextFromContext(ctx).TraceID())
		// ...acknowledge the message here, after the commit.
	}
	consume()
	consume() // a redelivery

	var n int
	db.Pool.QueryRow(ctx, "SELECT count(*) FROM "+db.Schema+".shipments").Scan(&n)
	fmt.Println("shipments:", n)
	// Output:
	// order.placed o-1 applied: true trace: 4bf92f3577b34da6a3ce929d0e0e4736
	// order.placed o-1 applied: false trace: 4bf92f3577b34da6a3ce929d0e0e4736
	// shipments: 1
}

// Each broker binding has its adapter; none imports a broker client.
func ExampleFromNATS() {
	header := map[string][]string{ // nats.Header
		"ce-id":        {"0190a6e4-7c2a-7b3e-9f00-000000000002"},
		"ce-type":      {"order.paid"},
		"ce-subject":   {"o-1"},
		"Content-Type": {"application/json"},
		"Nats-Msg-Id":  {"0190a6e4-7c2a-7b3e-9f00-000000000002"},
	}
	env, err := inbox.FromNATS(header, []byte(`{}`))
	fmt.Println(env.ID, env.EventType, env.AggregateID, env.SchemaVersion, err)
	// Output:
	// 0190a6e4-7c2a-7b3e-9f00-000000000002 order.paid o-1 1.0 <nil>
}

// A Redis stream entry as the relay's Redis sink writes it: attributes as
// fields, the content type in datacontenttype, the event headers as one JSON
// object in headers, the exact payload bytes in payload.
func ExampleFromRedis() {
	values := map[string]any{ // go-redis XMessage.Values
		"specversion":     "1.0",
		"id":              "0190a6e4-7c2a-7b3e-9f00-000000000003",
		"type":            "invoice.issued",
		"subject":         "inv-7",
		"aggregatetype":   "invoice",
		"schemaversion":   "2.0",
		"tenantid":        "acme",
		"datacontenttype": "application/protobuf",
		"headers":         `{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","x-user":"alice"}`,
		"payload":         "\x0a\x03inv\x00",
	}
	env, err := inbox.FromRedis(values)
	if err != nil {
		panic(err)
	}
	fmt.Println(env.EventType, env.AggregateType, env.AggregateID, env.SchemaVersion, env.TenantID, env.ContentType)
	fmt.Printf("%q %s\n", env.Payload, env.Headers["x-user"])
	fmt.Println(trace.SpanContextFromContext(env.TraceContext(context.Background())).TraceID())
	// Output:
	// invoice.issued invoice inv-7 2.0 acme application/protobuf
	// "\n\x03inv\x00" alice
	// 4bf92f3577b34da6a3ce929d0e0e4736
}
