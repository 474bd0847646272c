package history_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/history"
	"github.com/outboxrelay/outbox/sdk/internal/exampledb"
	"github.com/outboxrelay/outbox/sdk/internal/testdb"
)

func TestMain(m *testing.M) { exampledb.Main(m) }

// order is the state of one order, and the events that change it.
type order struct {
	Status  string
	Items   map[string]int // sku -> quantity
	Total   int
	Applied int
}

type itemAdded struct {
	SKU   string `json:"sku"`
	Qty   int    `json:"qty"`
	Price int    `json:"price"`
}

type itemRemoved struct {
	SKU   string `json:"sku"`
	Price int    `json:"price"`
}

// apply is the one fold function: used directly while generating the events
// and by history.Fold when rebuilding.
func apply(o order, e sdk.Event) (order, error) {
	o.Applied++
	switch e.EventType {
	case "order.created":
		o.Status, o.Items = "open", map[string]int{}
	case "order.item_added":
		var p itemAdded
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			return o, err
		}
		o.Items[p.SKU] += p.Qty
		o.Total += p.Qty * p.Price
	case "order.item_removed":
		var p itemRemoved
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			return o, err
		}
		o.Total -= o.Items[p.SKU] * p.Price
		delete(o.Items, p.SKU)
	case "order.paid":
		o.Status = "paid"
	default:
		return o, fmt.Errorf("unknown event %s", e.EventType)
	}
	return o, nil
}

func clone(o order) order {
	o.Items = maps.Clone(o.Items)
	return o
}

// generate returns n events of one order in a valid sequence, and the state
// they lead to computed directly.
func generate(rng *rand.Rand, id string, n int) ([]sdk.Event, order) {
	var events []sdk.Event
	var state order
	add := func(typ string, payload any) {
		b, _ := json.Marshal(payload)
		e := sdk.Event{AggregateType: "order", AggregateID: id, EventType: typ, Payload: b}
		var err error
		if state, err = apply(state, e); err != nil {
			panic(err)
		}
		events = append(events, e)
	}
	add("order.created", map[string]string{"id": id})
	prices := map[string]int{}
	for len(events) < n-1 {
		sku := fmt.Sprintf("sku-%d", rng.IntN(20))
		if _, ok := prices[sku]; !ok {
			prices[sku] = 1 + rng.IntN(100)
		}
		if state.Items[sku] > 0 && rng.IntN(4) == 0 {
			add("order.item_removed", itemRemoved{SKU: sku, Price: prices[sku]})
		} else {
			add("order.item_added", itemAdded{SKU: sku, Qty: 1 + rng.IntN(5), Price: prices[sku]})
		}
	}
	add("order.paid", struct{}{})
	return events, state
}

func setup(t *testing.T) (*testdb.Outbox, *sdk.Writer) {
	t.Helper()
	ob := testdb.New(t)
	if err := history.CreateIndex(context.Background(), ob.Pool, ob.Schema); err != nil {
		t.Fatal(err)
	}
	w, err := sdk.New(&sdk.Config{Schema: ob.Schema})
	if err != nil {
		t.Fatal(err)
	}
	return ob, w
}

// TestRebuild1000 writes 1,000 events of one order (in many transactions of
// varying size, by batches and single writes, interleaved with other orders'
// events) and rebuilds the order's state from its history, with pages small
// enough that page boundaries fall inside transactions.
func TestRebuild1000(t *testing.T) {
	t.Parallel()
	ob, w := setup(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	events, want := generate(rng, "o-1", 1000)
	noise, _ := generate(rng, "o-2", 300)
	for len(events) > 0 || len(noise) > 0 {
		n := min(len(events), 1+rng.IntN(150))
		m := min(len(noise), rng.IntN(40))
		err := pgx.BeginFunc(ctx, ob.Pool, func(tx pgx.Tx) error {
			if err := w.WriteBatch(ctx, tx, noise[:m]); err != nil {
				return err
			}
			if rng.IntN(3) == 0 {
				for i := range events[:n] {
					if err := w.Write(ctx, tx, &events[i]); err != nil {
						return err
					}
				}
				return nil
			}
			return w.WriteBatch(ctx, tx, events[:n])
		})
		if err != nil {
			t.Fatal(err)
		}
		events, noise = events[n:], noise[m:]
	}

	for _, pageSize := range []int{64, 1000, 5000} {
		l, err := history.New(&history.Config{Schema: ob.Schema, PageSize: pageSize})
		if err != nil {
			t.Fatal(err)
		}
		got, err := history.Fold(ctx, l, ob.Pool, "order", "o-1", order{}, func(o order, r history.Record) (order, error) {
			return apply(o, r.Event)
		})
		if err != nil {
			t.Fatal(err)
		}
		if got.Applied != 1000 || !reflect.DeepEqual(got, want) {
			t.Fatalf("page size %d: rebuilt %+v, want %+v", pageSize, got, want)
		}
	}

	// Through database/sql, and from a snapshot: fold 400 events, keep the
	// state and the cursor, continue from there.
	db := stdlib.OpenDBFromPool(ob.Pool)
	defer db.Close()
	l, _ := history.New(&history.Config{Schema: ob.Schema, PageSize: 100})
	var snap order
	var cur history.Cursor
	errStop := errors.New("stop")
	err := l.Load(ctx, db, "order", "o-1", history.Cursor{}, func(r history.Record) error {
		if snap.Applied == 400 {
			return errStop
		}
		var err error
		snap, err = apply(snap, r.Event)
		cur = r.Cursor()
		return err
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Load stopped with %v, want the callback's error", err)
	}
	got, err := history.FoldFrom(ctx, l, db, "order", "o-1", cur, clone(snap), func(o order, r history.Record) (order, error) {
		return apply(o, r.Event)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rebuilt from a snapshot at 400: %+v, want %+v", got, want)
	}
}

func TestOrderAndFields(t *testing.T) {
	t.Parallel()
	ob, w := setup(t)
	ctx := context.Background()
	// Three transactions; within each the ids order the events.
	var written []sdk.Event
	for tx := range 3 {
		batch := make([]sdk.Event, 5)
		for i := range batch {
			batch[i] = sdk.Event{AggregateType: "cart", AggregateID: "c", EventType: "cart.touched",
				Payload: fmt.Appendf(nil, `{"tx":%d,"i":%d}`, tx, i), TenantID: "t1", Headers: map[string]string{"k": "v"}}
		}
		if err := pgx.BeginFunc(ctx, ob.Pool, func(tx pgx.Tx) error { return w.WriteBatch(ctx, tx, batch) }); err != nil {
			t.Fatal(err)
		}
		written = append(written, batch...)
	}
	l, _ := history.New(&history.Config{Schema: ob.Schema, PageSize: 2})
	var got []history.Record
	if err := l.Load(ctx, ob.Pool, "cart", "c", history.Cursor{}, func(r history.Record) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(written) {
		t.Fatalf("%d events loaded, want %d", len(got), len(written))
	}
	for i := range written {
		g, w := got[i].Event, written[i]
		if g.ID != w.ID || string(g.Payload) != string(w.Payload) || g.TenantID != "t1" || g.Headers["k"] != "v" || !g.OccurredAt.Equal(w.OccurredAt) {
			t.Errorf("event %d: got %+v, want %+v", i, g, w)
		}
	}
	// Another aggregate of the same type, or the same id of another type,
	// has no history here.
	for _, k := range [][2]string{{"cart", "d"}, {"order", "c"}} {
		n := 0
		l.Load(ctx, ob.Pool, k[0], k[1], history.Cursor{}, func(history.Record) error { n++; return nil })
		if n != 0 {
			t.Errorf("%v: %d events, want 0", k, n)
		}
	}
	// The index is there and used.
	rows, err := ob.Pool.Query(ctx, "EXPLAIN SELECT * FROM "+ob.Schema+".events WHERE aggregate_type = 'cart' AND aggregate_id = 'c' AND seq > 0 ORDER BY seq LIMIT 2")
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	if !strings.Contains(plan, history.IndexName) {
		t.Errorf("plan does not use %s: %s", history.IndexName, plan)
	}
	if err := history.CreateIndex(ctx, ob.Pool, ob.Schema); err != nil {
		t.Errorf("CreateIndex is not idempotent: %v", err)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []*history.Config{{Schema: "A"}, {PageSize: -1}} {
		if _, err := history.New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

// Rows inserted by hand with only the required columns (docs/sdk.md, other
// languages) read back like the SDK's, defaults filled in by PostgreSQL.
func TestPlainSQLRows(t *testing.T) {
	t.Parallel()
	ob := testdb.New(t)
	ctx := context.Background()
	// Two transactions: within one, ids made by uuid_generate_v7() in the
	// same millisecond have no defined order.
	for _, q := range []string{
		"INSERT INTO " + ob.Schema + ".events (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', '42', 'order.placed', convert_to('{\"total\":100}', 'UTF8'))",
		"INSERT INTO " + ob.Schema + ".events (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', '42', 'order.paid', '\\x7b7d')",
	} {
		if _, err := ob.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := history.New(&history.Config{Schema: ob.Schema})
	var got []sdk.Event
	if err := l.Load(ctx, ob.Pool, "order", "42", history.Cursor{}, func(r history.Record) error {
		got = append(got, r.Event)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d events, want 2", len(got))
	}
	e := got[0]
	if e.EventType != "order.placed" || string(e.Payload) != `{"total":100}` || e.SchemaVersion != "1.0" ||
		e.ContentType != "application/json" || e.ID.Version() != 7 || e.Headers != nil || e.TenantID != "" || e.OccurredAt.IsZero() {
		t.Errorf("plain SQL row read back as %+v", e)
	}
	if got[1].EventType != "order.paid" || string(got[1].Payload) != "{}" {
		t.Errorf("second row %+v", got[1])
	}
}

// TestPlainSQLTransactionOrder: rows inserted by plain SQL in one transaction
// get database-made UUIDv7 ids that are not monotonic within a millisecond;
// history returns them in insertion order all the same (it ordered by
// (created_at, id) before, and reordered them).
func TestPlainSQLTransactionOrder(t *testing.T) {
	t.Parallel()
	ob := testdb.New(t)
	ctx := context.Background()
	const n = 500
	if _, err := ob.Pool.Exec(ctx, `INSERT INTO `+ob.Schema+`.events (aggregate_type, aggregate_id, event_type, payload)
	  SELECT 'order', 'o-sql', 'order.step', convert_to(i::text, 'UTF8') FROM generate_series(1, $1) AS i ORDER BY i`, n); err != nil {
		t.Fatal(err)
	}
	l, err := history.New(&history.Config{Schema: ob.Schema, PageSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := l.Load(ctx, ob.Pool, "order", "o-sql", history.Cursor{}, func(r history.Record) error {
		got = append(got, string(r.Payload))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d events, want %d", len(got), n)
	}
	for i, p := range got {
		if p != strconv.Itoa(i+1) {
			t.Fatalf("event %d is step %s: history reordered one transaction's rows", i+1, p)
		}
	}
}
