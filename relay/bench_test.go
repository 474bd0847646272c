package relay

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxrelay/outbox/internal/pgoutput"
	"github.com/outboxrelay/outbox/internal/pgoutput/pgoutputtest"
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

// benchPipeline is a dispatcher with one route to an acceptAll sink, fed the
// way pipeline.submit feeds it; what the dispatcher finishes comes out on
// delivered, where the marker would take it.
type benchPipeline struct {
	router    *router
	disp      *dispatcher
	pos       *position
	sink      *acceptAll
	in        chan []*item
	delivered chan []*item
	routes    []*route
	cancel    context.CancelFunc
	ended     chan struct{}
}

func newBenchPipeline(b *testing.B, m *metrics) *benchPipeline {
	b.Helper()
	cfg, err := ParseConfig([]byte(benchConfig), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	router, err := newRouter(cfg)
	if err != nil {
		b.Fatal(err)
	}
	p := &benchPipeline{router: router, pos: newPosition(0), sink: &acceptAll{}, in: make(chan []*item, 64),
		delivered: make(chan []*item, 4096), ended: make(chan struct{})}
	p.disp = newDispatcher(cfg.Delivery, map[string]Sink{"s": p.sink}, slog.New(slog.DiscardHandler), m, nil)
	p.disp.in, p.disp.delivered = p.in, p.delivered
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		p.disp.run(ctx)
		close(p.ended)
	}()
	return p
}

func (p *benchPipeline) stop() {
	p.cancel()
	<-p.ended
}

// submit routes ev and hands it to the dispatcher, as pipeline.submit does.
func (p *benchPipeline) submit(t *txn, ev *Event) {
	p.routes = p.router.match(p.routes[:0], ev)
	it := &item{ev: ev, key: ev.Key(), txn: t, ds: make([]*delivery, 0, len(p.routes))}
	for _, rt := range p.routes {
		it.addDelivery(rt, "/outbox/bench")
	}
	t.add(1)
	p.in <- []*item{it}
}

// finish finishes n events, as complete does once their rows are marked.
func (p *benchPipeline) finish(n int) {
	for n > 0 {
		for _, it := range <-p.delivered {
			it.txn.done()
			n--
		}
	}
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
	benchDispatch(b, newMetrics(prometheus.NewRegistry()))
}

func benchDispatch(b *testing.B, m *metrics) {
	p := newBenchPipeline(b, m)
	defer p.stop()
	evs := benchEvents(1000)
	finished := make(chan struct{})
	go func() {
		p.finish(b.N)
		close(finished)
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		t := p.pos.begin()
		p.submit(t, evs[i%len(evs)])
		t.commit(0)
	}
	<-finished
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDispatchOneByOne hands the dispatcher one event and waits for it
// to come back before the next: a trickle, as when the relay keeps up with
// writers committing one event at a time. Nothing is batched; the cost is
// the goroutine hand-offs per event.
func BenchmarkDispatchOneByOne(b *testing.B) {
	p := newBenchPipeline(b, nil)
	defer p.stop()
	evs := benchEvents(1000)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		t := p.pos.begin()
		p.submit(t, evs[i%len(evs)])
		t.commit(0)
		p.finish(1)
	}
}

// BenchmarkDecodeRouteSubmit is the stream's own per-event work before the
// hand-off: decode a pgoutput insert, make its item, route it, build its
// deliveries.
func BenchmarkDecodeRouteSubmit(b *testing.B) {
	cfg, err := ParseConfig([]byte(benchConfig), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	router, err := newRouter(cfg)
	if err != nil {
		b.Fatal(err)
	}
	p := &pipeline{router: router, logger: slog.New(slog.DiscardHandler)}
	dec := pgoutput.NewDecoder("outbox")
	var row pgoutput.Row
	for _, m := range [][]byte{pgoutputtest.EventsRelation(7, "outbox"), pgoutputtest.Begin(1, time.Now())} {
		if _, err := dec.Decode(m, &row); err != nil {
			b.Fatal(err)
		}
	}
	msg := pgoutputtest.SampleInsert(7)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := dec.Decode(msg, &row); err != nil { // copies msg, as the stream needs
			b.Fatal(err)
		}
		p.route(newItem(&row, nil))
	}
}
