package history_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/history"
	"github.com/outboxrelay/outbox/sdk/internal/exampledb"
)

type cart struct {
	Items map[string]int
	Open  bool
}

// Rebuild a cart's state from the events it was written with.
func ExampleFold() {
	ctx := context.Background()
	db := exampledb.New()
	defer db.Close()
	history.CreateIndex(ctx, db.Pool, db.Schema) // once, at deploy time
	w, _ := sdk.New(&sdk.Config{Schema: db.Schema})

	write := func(typ, payload string) {
		e := sdk.Event{AggregateType: "cart", AggregateID: "c-1", EventType: typ, Payload: []byte(payload)}
		if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return w.Write(ctx, tx, &e) }); err != nil {
			panic(err)
		}
	}
	write("cart.opened", `{}`)
	write("cart.item_added", `{"sku":"apple","qty":3}`)
	write("cart.item_added", `{"sku":"pear","qty":1}`)
	write("cart.item_removed", `{"sku":"apple","qty":1}`)
	write("cart.checked_out", `{}`)

	l, _ := history.New(&history.Config{Schema: db.Schema})
	state, err := history.Fold(ctx, l, db.Pool, "cart", "c-1", cart{}, func(c cart, r history.Record) (cart, error) {
		var p struct {
			SKU string
			Qty int
		}
		if err := json.Unmarshal(r.Payload, &p); err != nil {
			return c, err
		}
		switch r.EventType {
		case "cart.opened":
			c = cart{Items: map[string]int{}, Open: true}
		case "cart.item_added":
			c.Items[p.SKU] += p.Qty
		case "cart.item_removed":
			c.Items[p.SKU] -= p.Qty
		case "cart.checked_out":
			c.Open = false
		}
		return c, nil
	})
	fmt.Println(state.Items, "open:", state.Open, err)
	// Output:
	// map[apple:2 pear:1] open: false <nil>
}
