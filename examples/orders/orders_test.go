package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/outboxrelay/outbox/examples/orders/events"
	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/sdk/history"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type bundle struct {
	o   *testutil.Outbox
	srv *httptest.Server
}

// setup runs the service over a fresh outbox; the orders table lives in the
// outbox's schema, so the test's cleanup drops it too.
func setup(t *testing.T) *bundle {
	t.Helper()
	o := testutil.NewOutbox(t)
	s, err := newServer(o.Pool, o.Schema, o.Schema, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.migrate(ctx, o.Schema); err != nil {
		t.Fatal(err)
	}
	if err := history.CreateIndex(ctx, o.Pool, o.Schema); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.routes())
	t.Cleanup(srv.Close)
	return &bundle{o: o, srv: srv}
}

func (b *bundle) do(t *testing.T, method, path, body string, want int) map[string]any {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, b.srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %q is not a JSON object: %v", method, path, raw, err)
	}
	return out
}

// stored is an event row of the outbox.
type stored struct {
	id, aggID, eventType, version string
	payload                       []byte
}

func (b *bundle) events(t *testing.T) []stored {
	t.Helper()
	rows, err := b.o.Pool.Query(context.Background(),
		"SELECT id::text, aggregate_id, event_type, schema_version, payload FROM "+b.o.Schema+".events WHERE aggregate_type = 'order' ORDER BY created_at, id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []stored
	for rows.Next() {
		var s stored
		if err := rows.Scan(&s.id, &s.aggID, &s.eventType, &s.version, &s.payload); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func (b *bundle) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := b.o.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.o.Schema+"."+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPlaceOrderWritesEventInTheSameTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.do(t, "POST", "/orders", `{"customer": "alice", "items": [{"sku": "book", "quantity": 2, "price_cents": 1250}, {"sku": "pen", "quantity": 1, "price_cents": 199}]}`, http.StatusCreated)
	id, _ := res["id"].(string)
	if !strings.HasPrefix(id, "ord-") || res["total_cents"] != float64(2699) || res["status"] != "placed" {
		t.Fatalf("response %v", res)
	}
	evs := b.events(t)
	if len(evs) != 1 {
		t.Fatalf("%d events written, want 1", len(evs))
	}
	e := evs[0]
	if e.aggID != id || e.eventType != "order.placed" || e.version != "1.0" || e.id != res["event_id"] {
		t.Errorf("event %+v, want order.placed 1.0 of %s with id %v", e, id, res["event_id"])
	}
	var p events.OrderPlaced
	if err := json.Unmarshal(e.payload, &p); err != nil || p.OrderID != id || p.Customer != "alice" || p.TotalCents != 2699 || len(p.Items) != 2 {
		t.Errorf("payload %s (%v)", e.payload, err)
	}
	var status string
	var total int64
	if err := b.o.Pool.QueryRow(context.Background(), "SELECT status, total_cents FROM "+b.o.Schema+".orders WHERE id = $1", id).Scan(&status, &total); err != nil || status != "placed" || total != 2699 {
		t.Errorf("orders row: %s %d %v", status, total, err)
	}

	// Bad requests write nothing.
	for _, body := range []string{
		`{"customer": "", "items": [{"sku": "a", "quantity": 1, "price_cents": 1}]}`,
		`{"customer": "bob", "items": []}`,
		`{"customer": "bob", "items": [{"sku": "a", "quantity": 0, "price_cents": 1}]}`,
		`{"customer": "bob", "items": [{"sku": "a", "quantity": 1, "price_cents": 1}], "coupon": "x"}`,
		`not json`,
	} {
		res := b.do(t, "POST", "/orders", body, http.StatusBadRequest)
		if res["error"] == "" {
			t.Errorf("%s: no error message", body)
		}
	}
	if n, m := b.count(t, "orders"), b.count(t, "events"); n != 1 || m != 1 {
		t.Errorf("after bad requests: %d orders, %d events; want 1 and 1", n, m)
	}
}

// TestFailedEventWriteRollsBackTheOrder points the writer at a schema without
// an outbox: the event write fails, and the order row goes with it.
func TestFailedEventWriteRollsBackTheOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s, err := newServer(b.o.Pool, "no_outbox_here", b.o.Schema, quiet)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.routes())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/orders", "application/json", bytes.NewBufferString(`{"customer": "carol", "items": [{"sku": "a", "quantity": 1, "price_cents": 5}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", resp.StatusCode)
	}
	if n := b.count(t, "orders"); n != 0 {
		t.Fatalf("%d orders committed although their event was not written", n)
	}
}

func TestLifecycleRebuiltFromHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	place := func(customer string, price int) string {
		res := b.do(t, "POST", "/orders", `{"customer": "`+customer+`", "items": [{"sku": "x", "quantity": 3, "price_cents": `+strconv.Itoa(price)+`}]}`, http.StatusCreated)
		return res["id"].(string)
	}
	paid, cancelled, open := place("alice", 100), place("bob", 200), place("alice", 300)
	b.do(t, "POST", "/orders/"+paid+"/pay", "", http.StatusOK)
	b.do(t, "POST", "/orders/"+paid+"/pay", "", http.StatusConflict)
	b.do(t, "POST", "/orders/"+cancelled+"/cancel", `{"reason": "changed my mind"}`, http.StatusOK)
	b.do(t, "POST", "/orders/"+cancelled+"/pay", "", http.StatusConflict)
	b.do(t, "POST", "/orders/"+paid+"/cancel", "", http.StatusConflict)
	b.do(t, "POST", "/orders/ord-missing/pay", "", http.StatusNotFound)
	b.do(t, "GET", "/orders/ord-missing", "", http.StatusNotFound)

	// Every change wrote exactly one event; refused ones wrote none.
	var types []string
	for _, e := range b.events(t) {
		types = append(types, e.eventType)
	}
	if want := []string{"order.placed", "order.placed", "order.placed", "order.paid", "order.cancelled"}; !slices.Equal(types, want) {
		t.Errorf("events %v, want %v", types, want)
	}

	for _, tc := range []struct {
		id, customer, status string
		total, paid          float64
		history              []string
		reason               string
	}{
		{paid, "alice", "paid", 300, 300, []string{"order.placed", "order.paid"}, ""},
		{cancelled, "bob", "cancelled", 600, 0, []string{"order.placed", "order.cancelled"}, "changed my mind"},
		{open, "alice", "placed", 900, 0, []string{"order.placed"}, ""},
	} {
		o := b.do(t, "GET", "/orders/"+tc.id, "", http.StatusOK)
		var hist []string
		for _, c := range o["history"].([]any) {
			hist = append(hist, c.(map[string]any)["event_type"].(string))
		}
		if o["id"] != tc.id || o["customer"] != tc.customer || o["status"] != tc.status || o["total_cents"] != tc.total ||
			o["paid_cents"] != tc.paid || !slices.Equal(hist, tc.history) || (o["cancel_reason"] != nil && o["cancel_reason"] != tc.reason) {
			t.Errorf("order %s rebuilt as %v, want %+v", tc.id, o, tc)
		}
		// The rebuilt status matches the table the service also keeps.
		var status string
		if err := b.o.Pool.QueryRow(context.Background(), "SELECT status FROM "+b.o.Schema+".orders WHERE id = $1", tc.id).Scan(&status); err != nil || status != tc.status {
			t.Errorf("orders row of %s: %q %v, rebuilt %q", tc.id, status, err, tc.status)
		}
	}
}
