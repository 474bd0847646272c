package relay

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The hot path of the relay between the replication stream and a sink, with a
// sink that accepts everything at once: what the relay itself costs per
// event. See docs/performance.md; `make bench` measures the whole thing.

const benchConfig = `
database: {url: 'postgres://h/db'}
sinks: [{name: s, type: stdout}]
routes:
  - {name: orders, match: "order.*", sink: s, destination: "orders.{{.EventType}}"}
`

// acceptAll is a sink that accepts every message at once.
type acceptAll struct{ n atomic.Int64 }

func (a *acceptAll) Publish(_ context.Context, msgs []*Message) []error {
	a.n.Add(int64(len(msgs)))
	return nil
}
func (a *acceptAll) Close() error { return nil }

// pipeline is a dispatcher with one route to an acceptAll sink, fed the way
// session.submit feeds it.
type pipeline struct {
	router *Router
	disp   *dispatcher
	pos    *Position
	sink   *acceptAll
	done   chan *item
	routes []*Route
	cancel context.CancelFunc
	ended  chan struct{}
}

func newPipeline(b *testing.B, m *Metrics) *pipeline {
	b.Helper()
	cfg, err := ParseConfig([]byte(benchConfig), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	router, err := NewRouter(cfg)
	if err != nil {
		b.Fatal(err)
	}
	p := &pipeline{router: router, pos: NewPosition(0), sink: &acceptAll{}, done: make(chan *item, 4096), ended: make(chan struct{})}
	p.disp = newDispatcher(cfg.Delivery, map[string]Sink{"s": p.sink}, slog.New(slog.DiscardHandler), m, nil, func(items []*item) {
		for _, it := range items {
			p.done <- it
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		p.disp.run(ctx)
		close(p.ended)
	}()
	return p
}

func (p *pipeline) stop() {
	p.cancel()
	<-p.ended
}

// submit routes ev and hands it to the dispatcher, as session.submit does.
func (p *pipeline) submit(txn *Txn, ev *Event) {
	p.routes = p.router.Match(p.routes[:0], ev)
	it := newItem(ev, txn, len(p.routes))
	for _, rt := range p.routes {
		dl := &delivery{route: rt, item: it, msg: Message{Event: ev, Route: rt.Name, Source: "/outbox/bench", Headers: ev.Headers, Attempt: 1}}
		dest, err := rt.Destination.Render(ev)
		if err != nil {
			panic(err)
		}
		dl.msg.Destination = dest
		it.ds = append(it.ds, dl)
	}
	txn.Add(1)
	p.disp.in <- []*item{it}
}

func benchEvents(n int) []*Event {
	evs := make([]*Event, n)
	for i := range evs {
		evs[i] = &Event{AggregateType: "order", AggregateID: strconv.Itoa(i), EventType: "order.created", Payload: make([]byte, 300), ContentType: "application/json"}
	}
	return evs
}

// BenchmarkDispatch is events streaming through route, dispatcher (batches,
// per-key queues) and an accept-all sink back to the position tracker, one
// event per transaction, 1,000 keys, as fast as they come: a backlog.
func BenchmarkDispatch(b *testing.B) {
	benchDispatch(b, nil)
}

// BenchmarkDispatchMetrics is BenchmarkDispatch with the Prometheus metrics
// registered, as the relay runs.
func BenchmarkDispatchMetrics(b *testing.B) {
	benchDispatch(b, NewMetrics(prometheus.NewRegistry()))
}

func benchDispatch(b *testing.B, m *Metrics) {
	p := newPipeline(b, m)
	defer p.stop()
	evs := benchEvents(1000)
	finished := make(chan struct{})
	go func() {
		for range b.N {
			it := <-p.done
			it.txn.Done()
		}
		close(finished)
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		txn := p.pos.Begin()
		p.submit(txn, evs[i%len(evs)])
		txn.Commit(0)
	}
	<-finished
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDispatchOneByOne hands the dispatcher one event and waits for it
// to come back before the next: a trickle, as when the relay keeps up with
// writers committing one event at a time. Nothing is batched; the cost is
// the goroutine hand-offs per event.
func BenchmarkDispatchOneByOne(b *testing.B) {
	p := newPipeline(b, nil)
	defer p.stop()
	evs := benchEvents(1000)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		txn := p.pos.Begin()
		p.submit(txn, evs[i%len(evs)])
		txn.Commit(0)
		it := <-p.done
		it.txn.Done()
	}
}

// BenchmarkDecodeRouteSubmit is the stream's own per-event work before the
// hand-off: decode a pgoutput insert, route it, build its deliveries.
func BenchmarkDecodeRouteSubmit(b *testing.B) {
	cfg, err := ParseConfig([]byte(benchConfig), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	router, err := NewRouter(cfg)
	if err != nil {
		b.Fatal(err)
	}
	msg := sampleInsert()
	rels := testRelation()
	var routes []*Route
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		buf := append([]byte(nil), msg...) // the stream copies each message
		ev := &Event{}
		if err := decodeInsert(buf, rels, ev); err != nil {
			b.Fatal(err)
		}
		routes = router.Match(routes[:0], ev)
		it := newItem(ev, nil, len(routes))
		for _, rt := range routes {
			dl := &delivery{route: rt, item: it, msg: Message{Event: ev, Route: rt.Name, Headers: ev.Headers, Attempt: 1}}
			dl.msg.Destination, _ = rt.Destination.Render(ev)
			it.ds = append(it.ds, dl)
		}
	}
}

// BenchmarkDecodeInsertHeaders decodes an insert whose headers are empty, a
// traceparent (an instrumented service's event), or hold a non-string value
// (a hand-written row: decoded twice).
func BenchmarkDecodeInsertHeaders(b *testing.B) {
	for _, tc := range []struct{ name, headers string }{
		{"none", `{}`},
		{"traceparent", `{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`},
		{"mixed", `{"traceparent": "00-abc", "n": 5}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			id := [16]byte{1, 2, 3}
			at := pgTime(time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC))
			msg := insertMsg(7, []col{
				{'b', id[:]}, {'b', []byte("order")}, {'b', []byte("42")}, {'b', []byte("order.created")}, {'b', []byte("1.0")},
				{'b', make([]byte, 300)}, {'b', []byte("application/json")}, {'b', append([]byte{1}, tc.headers...)},
				{'n', nil}, {'b', at}, {'b', at}, {'n', nil},
			})
			rels := testRelation()
			b.ReportAllocs()
			for b.Loop() {
				var ev Event
				if err := decodeInsert(msg, rels, &ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
