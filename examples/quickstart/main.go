// Command quickstart writes one order and its event in one transaction with
// the Go SDK, into the outbox that `make demo` made (schema "demo" of
// DATABASE_URL). A relay on examples/demo/relay.yaml prints the event when it
// arrives. The README shows the lines between "README:" marks (a test keeps
// the two the same):
//
//	export DATABASE_URL="$(scripts/services.sh url)"
//	bin/outbox relay --config examples/demo/relay.yaml &
//	go run ./examples/quickstart
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/sdk"
)

func main() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS demo.orders (id text PRIMARY KEY, customer text, total numeric, status text)`); err != nil {
		log.Fatalf("%v (run `make demo` first: it creates the demo outbox)", err)
	}
	orderID := fmt.Sprintf("ord-%d", time.Now().UnixMilli()%1e9)

	// README: begin
	w, err := sdk.New(&sdk.Config{Schema: "demo"}) // nil: schema "outbox"
	if err != nil {
		log.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]any{"order_id": orderID, "total": 42})
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO demo.orders (id, customer, total, status) VALUES ($1, 'you', 42, 'placed')`, orderID); err != nil {
			return err // rolls back: no order, no event
		}
		return w.Write(ctx, tx, &sdk.Event{
			AggregateType: "order", AggregateID: orderID,
			EventType: "order.placed", Payload: payload, // JSON by default
		})
	})
	// README: end
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("order %s and its order.placed event committed in one transaction\n", orderID)
}
