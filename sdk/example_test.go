package sdk_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/internal/exampledb"
)

// OrderPlaced is the payload of the order.placed event, version 1.0.
type OrderPlaced struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total"`
}

func (OrderPlaced) EventType() string     { return "order.placed" }
func (OrderPlaced) SchemaVersion() string { return "1.0" }

// The event is written in the same transaction as the business row: both
// commit, or neither does.
func ExampleWriter_Write() {
	ctx := context.Background()
	ob := exampledb.New() // a migrated outbox in a fresh schema
	defer ob.Close()
	pool := ob.Pool
	if _, err := pool.Exec(ctx, "CREATE TABLE "+ob.Schema+".orders (id text PRIMARY KEY, total int)"); err != nil {
		panic(err)
	}

	outbox, err := sdk.New(&sdk.Config{Schema: ob.Schema})
	if err != nil {
		panic(err)
	}

	placeOrder := func(ctx context.Context, id string, total int) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+ob.Schema+".orders VALUES ($1, $2)", id, total); err != nil {
				return err
			}
			e, err := sdk.NewEvent("order", id, OrderPlaced{OrderID: id, Total: total})
			if err != nil {
				return err
			}
			return outbox.Write(ctx, tx, &e)
		})
	}
	if err := placeOrder(ctx, "o-1", 250); err != nil {
		panic(err)
	}
	// A failing business transaction leaves no event behind.
	err = placeOrder(ctx, "o-1", 999) // duplicate order id: rolled back
	fmt.Println("second order failed:", err != nil)

	rows, _ := pool.Query(ctx, "SELECT event_type, aggregate_id, schema_version, payload FROM "+ob.Schema+".events")
	for rows.Next() {
		var typ, agg, ver string
		var payload []byte
		rows.Scan(&typ, &agg, &ver, &payload)
		fmt.Println(typ, agg, ver, string(payload))
	}
	// Output:
	// second order failed: true
	// order.placed o-1 1.0 {"order_id":"o-1","total":250}
}

// WriteBatch sends many events in one statement.
func ExampleWriter_WriteBatch() {
	ctx := context.Background()
	ob := exampledb.New()
	defer ob.Close()
	outbox, _ := sdk.New(&sdk.Config{Schema: ob.Schema})

	events := []sdk.Event{
		{AggregateType: "order", AggregateID: "o-1", EventType: "order.item_added", Payload: []byte(`{"sku":"A"}`)},
		{AggregateType: "order", AggregateID: "o-1", EventType: "order.item_added", Payload: []byte(`{"sku":"B"}`)},
		{AggregateType: "order", AggregateID: "o-1", EventType: "order.submitted", Payload: []byte(`{}`), TenantID: "acme"},
	}
	err := pgx.BeginFunc(ctx, ob.Pool, func(tx pgx.Tx) error {
		return outbox.WriteBatch(ctx, tx, events)
	})
	if err != nil {
		panic(err)
	}
	var n int
	ob.Pool.QueryRow(ctx, "SELECT count(*) FROM "+ob.Schema+".events WHERE aggregate_id = 'o-1'").Scan(&n)
	fmt.Println(n, "events written; ids set:", events[0].ID.Version() == 7 && events[2].ID.Version() == 7)
	// Output:
	// 3 events written; ids set: true
}

// Invalid events are refused before anything reaches the database, with
// errors that say which field failed and match sentinels with errors.Is.
func ExampleValidationError() {
	outbox, _ := sdk.New(nil)
	ctx := context.Background()

	_, err := outbox.Prepare(ctx, sdk.Event{AggregateType: "order", AggregateID: "o-1", Payload: []byte(`{}`)})
	fmt.Println(err)
	fmt.Println(errors.Is(err, sdk.ErrMissingField))

	_, err = outbox.Prepare(ctx, sdk.Event{AggregateType: "order", AggregateID: "o-1", EventType: "order.placed", Payload: []byte(`{"total":`)})
	var ve *sdk.ValidationError
	if errors.As(err, &ve) {
		fmt.Println(ve.Field, errors.Is(err, sdk.ErrInvalidJSON))
	}
	// Output:
	// sdk: event_type: is required
	// true
	// payload true
}
