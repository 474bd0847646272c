// Command demo writes a few sample business transactions, each an order row
// plus its outbox events written through the SDK in the same transaction, and
// one that rolls back, so `make demo` can show their events arriving.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/sdk"
)

func main() {
	schema := flag.String("schema", "demo", "outbox schema")
	orders := flag.Int("orders", 5, "orders to place")
	every := flag.Duration("every", 700*time.Millisecond, "pause between orders")
	run := flag.String("run", time.Now().Format("150405"), "this run's name: the orders are ord-RUN-1, ord-RUN-2, ...")
	flag.Parse()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %q.orders (id text PRIMARY KEY, customer text, total numeric, status text)`, *schema)); err != nil {
		log.Fatal(err)
	}
	w, err := sdk.New(&sdk.Config{Schema: *schema})
	if err != nil {
		log.Fatal(err)
	}
	for i := 1; i <= *orders; i++ {
		id := fmt.Sprintf("ord-%s-%d", *run, i)
		rollback := i == 3 // one business transaction fails: its events must never appear
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			total := 40 * i
			if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %q.orders VALUES ($1, $2, $3, 'placed')`, *schema), id, "alice", total); err != nil {
				return err
			}
			placed, _ := json.Marshal(map[string]any{"order_id": id, "customer": "alice", "total": total})
			paid, _ := json.Marshal(map[string]any{"order_id": id, "amount": total})
			err := w.WriteBatch(ctx, tx, []sdk.Event{
				{AggregateType: "order", AggregateID: id, EventType: "order.placed", Payload: placed},
				{AggregateType: "order", AggregateID: id, EventType: "order.paid", Payload: paid},
			})
			if err != nil {
				return err
			}
			if rollback {
				return fmt.Errorf("payment declined")
			}
			return nil
		})
		if rollback {
			fmt.Fprintf(os.Stderr, "demo: order %s rolled back (%v): its events are never relayed\n", id, err)
		} else if err != nil {
			log.Fatal(err)
		} else {
			fmt.Fprintf(os.Stderr, "demo: order %s committed with 2 events\n", id)
		}
		if i < *orders {
			time.Sleep(*every)
		}
	}
}
