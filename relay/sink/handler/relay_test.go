package handler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/handler"
	"github.com/outboxrelay/outbox/sdk"
)

// runRelay runs a relay in-process over o with sink as its only sink (every
// event routed to it) until the test ends.
func runRelay(t *testing.T, o *testutil.Outbox, s sink.Sink) {
	t.Helper()
	retry := relay.RetryConfig{MaxAttempts: 10000, InitialInterval: relay.Duration(5 * time.Millisecond), MaxInterval: relay.Duration(20 * time.Millisecond)}
	cfg, err := relay.NewConfig(relay.Config{
		Database: relay.DatabaseConfig{URL: o.DatabaseURL, Schema: o.Schema, Slot: o.Slot, Publication: o.Publication},
		Delivery: relay.DeliveryConfig{MarkInterval: relay.Duration(10 * time.Millisecond), BatchSize: 16},
		Routes:   []relay.RouteConfig{{Name: "app", Match: "*", Sink: "app", Retry: retry}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(cfg, map[string]sink.Sink{"app": s}, &relay.Options{Logger: quiet, DrainTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("relay: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("relay did not stop within 30s")
		}
		s.Close()
	})
}

type written struct {
	mu    sync.Mutex
	order map[string][]string // ids per key, in commit order
	byID  map[string]string   // id -> event type
}

// write commits events through the SDK: for each round, one transaction
// with one event of every key, so keys interleave in the stream.
func write(t *testing.T, o *testutil.Outbox, keys []string, rounds int, eventType func(key string, round int) string) *written {
	t.Helper()
	ctx := context.Background()
	w, err := sdk.New(&sdk.Config{Schema: o.Schema})
	if err != nil {
		t.Fatal(err)
	}
	out := &written{order: map[string][]string{}, byID: map[string]string{}}
	for round := range rounds {
		events := make([]sdk.Event, len(keys))
		for i, k := range keys {
			p, _ := json.Marshal(map[string]any{"key": k, "round": round})
			events[i] = sdk.Event{AggregateType: "order", AggregateID: k, EventType: eventType(k, round), Payload: p}
		}
		err := pgx.BeginFunc(ctx, o.Pool, func(tx pgx.Tx) error { return w.WriteBatch(ctx, tx, events) })
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			out.order[e.AggregateType+":"+e.AggregateID] = append(out.order[e.AggregateType+":"+e.AggregateID], e.ID.String())
			out.byID[e.ID.String()] = e.EventType
		}
	}
	return out
}

// arrivals records the events handlers completed, per key.
type arrivals struct {
	mu    sync.Mutex
	order map[string][]string
	n     int
}

func (a *arrivals) add(m *sink.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.order == nil {
		a.order = map[string][]string{}
	}
	a.order[m.Event.Key()] = append(a.order[m.Event.Key()], m.Event.ID.String())
	a.n++
}

func (a *arrivals) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

func (a *arrivals) of(key string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.order[key])
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func undelivered(t *testing.T, o *testutil.Outbox) int {
	t.Helper()
	var n int
	if err := o.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+o.Schema+".events WHERE delivered_at IS NULL").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

type deadLetter struct {
	eventID, eventType, route, sink, lastError string
	attempts                                   int
}

func deadLetters(t *testing.T, o *testutil.Outbox) map[string]deadLetter {
	t.Helper()
	rows, err := o.Pool.Query(context.Background(), "SELECT event_id::text, event_type, route, sink, last_error, attempts FROM "+o.Schema+".dead_letters")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]deadLetter{}
	for rows.Next() {
		var d deadLetter
		if err := rows.Scan(&d.eventID, &d.eventType, &d.route, &d.sink, &d.lastError, &d.attempts); err != nil {
			t.Fatal(err)
		}
		out[d.eventID] = d
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRelayWithHandlers runs the relay in-process with synchronous handlers:
// every event arrives in commit order per key; a failing key is retried while
// the other keys flow; a permanent error and an event type without a handler
// are dead-lettered at once, and their keys go on.
func TestRelayWithHandlers(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "stuck", "poison"}
	const rounds = 12
	w := write(t, o, keys, rounds, func(key string, round int) string {
		switch {
		case key == "poison" && round == 3:
			return "order.poisoned"
		case key == "k5" && round == 7:
			return "invoice.sent" // no handler
		}
		return "order.updated"
	})
	stuckFirst := w.order["order:stuck"][0]
	flaky := w.order["order:k2"][4]

	h, err := handler.New(&handler.Config{Concurrency: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var got arrivals
	var release atomic.Bool
	var flakyAttempt atomic.Int32
	var handlerErr atomic.Value
	check := func(cond bool, format string, args ...any) {
		if !cond {
			handlerErr.CompareAndSwap(nil, fmt.Sprintf(format, args...))
		}
	}
	must(t, h.Handle("order.*", func(ctx context.Context, m *sink.Message) error {
		e := m.Event
		check(m.Route == "app" && m.Destination == e.EventType, "message %s: route %q destination %q", e.ID, m.Route, m.Destination)
		check(ctx.Err() == nil, "handler called with a done context")
		switch id := e.ID.String(); {
		case id == stuckFirst && !release.Load():
			return errors.New("downstream unavailable")
		case id == flaky && m.Attempt < 4:
			return fmt.Errorf("flaky attempt %d", m.Attempt)
		case id == flaky:
			flakyAttempt.Store(int32(m.Attempt))
		}
		got.add(m)
		return nil
	}))
	must(t, h.Handle("order.poisoned", func(context.Context, *sink.Message) error {
		return sink.MarkPermanent(errors.New("cannot apply a poisoned order"))
	}))
	runRelay(t, o, h)

	// Everything but the stuck key's events is handled while its first event
	// keeps failing.
	others := len(keys)*rounds - rounds - 2
	waitFor(t, "every other key's events", 60*time.Second, func() bool { return got.count() >= others })
	time.Sleep(100 * time.Millisecond)
	if n := len(got.of("order:stuck")); n != 0 {
		t.Fatalf("%d events of the stuck key arrived while its first event was failing", n)
	}
	release.Store(true)
	waitFor(t, "every row marked", 60*time.Second, func() bool { return undelivered(t, o) == 0 })
	if v := handlerErr.Load(); v != nil {
		t.Fatal(v)
	}

	for key, ids := range w.order {
		var want []string
		for _, id := range ids {
			if et := w.byID[id]; et == "order.updated" {
				want = append(want, id)
			}
		}
		if g := got.of(key); !slices.Equal(g, want) {
			t.Errorf("key %s: handled\n%v\nwant (commit order)\n%v", key, g, want)
		}
	}
	if a := flakyAttempt.Load(); a != 4 {
		t.Errorf("the flaky event succeeded on attempt %d, want 4", a)
	}

	dls := deadLetters(t, o)
	if len(dls) != 2 {
		t.Fatalf("dead letters: %+v, want the poisoned event and the unhandled one", dls)
	}
	poison := dls[w.order["order:poison"][3]]
	if poison.eventType != "order.poisoned" || poison.attempts != 1 || poison.route != "app" || poison.sink != "app" ||
		!strings.Contains(poison.lastError, "cannot apply a poisoned order") {
		t.Errorf("poisoned dead letter: %+v", poison)
	}
	unhandled := dls[w.order["order:k5"][7]]
	if unhandled.eventType != "invoice.sent" || unhandled.attempts != 1 || !strings.Contains(unhandled.lastError, "no handler") {
		t.Errorf("unhandled dead letter: %+v", unhandled)
	}
}

// TestRelayWithAsyncHandlers completes messages from a worker goroutine, as a
// handler wrapping an asynchronous client would, with some first attempts
// failing.
func TestRelayWithAsyncHandlers(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	keys := []string{"a", "b", "c", "d", "e", "f"}
	const rounds = 15
	w := write(t, o, keys, rounds, func(string, int) string { return "order.updated" })

	h, err := handler.New(&handler.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	type job struct {
		m    *sink.Message
		done func(error)
	}
	jobs := make(chan job, 64)
	var got arrivals
	var failed sync.Map
	var worker sync.WaitGroup
	worker.Go(func() {
		for j := range jobs {
			time.Sleep(time.Millisecond)
			id := j.m.Event.ID.String()
			// About one event in eight fails once, from the worker.
			if strings.HasSuffix(id, "0") || strings.HasSuffix(id, "5") {
				if _, loaded := failed.LoadOrStore(id, true); !loaded {
					j.done(errors.New("async failure"))
					continue
				}
			}
			got.add(j.m)
			j.done(nil)
		}
	})
	must(t, h.HandleAsync("order.*", func(ctx context.Context, m *sink.Message, done func(error)) {
		select {
		case jobs <- job{m, done}:
		case <-ctx.Done():
			done(ctx.Err())
		}
	}))
	t.Cleanup(func() { // registered first, so it runs after the relay stopped
		close(jobs)
		worker.Wait()
	})
	runRelay(t, o, h)

	waitFor(t, "every row marked", 60*time.Second, func() bool { return undelivered(t, o) == 0 })
	for key, want := range w.order {
		if g := got.of(key); !slices.Equal(g, want) {
			t.Errorf("key %s: handled\n%v\nwant (commit order)\n%v", key, g, want)
		}
	}
	if dls := deadLetters(t, o); len(dls) != 0 {
		t.Errorf("dead letters: %+v", dls)
	}
	n := 0
	failed.Range(func(any, any) bool { n++; return true })
	if n == 0 {
		t.Errorf("no event failed once: the retry path was not exercised")
	}
}
