package relay_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay"
	natssink "github.com/outboxrelay/outbox/relay/sink/nats"
	"github.com/outboxrelay/outbox/sdk"
)

// bundle is an in-process relay over a test outbox with one NATS sink.
type bundle struct {
	o       *testutil.Outbox
	stream  string
	prefix  string
	sink    relay.Sink
	relay   *relay.Relay
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	natsURL string
}

// setup starts a relay whose routes come from routesYAML (use SINK and PREFIX
// as placeholders). wrap, when set, wraps the NATS sink.
func setup(t *testing.T, routesYAML string, opts *relay.Options, wrap func(relay.Sink) relay.Sink) *bundle {
	t.Helper()
	o := testutil.NewOutbox(t)
	b := &bundle{o: o, stream: strings.ToUpper(testutil.RandomName("RT_")), prefix: testutil.RandomName("rt"), natsURL: testutil.NATSURL(t)}
	src := fmt.Sprintf("database:\n  url: %s\n  schema: %s\n  slot: %s\n  publication: %s\n  sample_interval: 200ms\nsinks:\n  - {name: bus, type: nats}\n%s",
		o.DatabaseURL, o.Schema, o.Slot, o.Publication, strings.ReplaceAll(routesYAML, "PREFIX", b.prefix))
	cfg, err := relay.ParseConfig([]byte(src), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate([]string{"nats"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := natssink.New(ctx, natssink.Config{URL: b.natsURL, Stream: b.stream, Subjects: []string{b.prefix + ".ok.>"}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc, err := nats.Connect(b.natsURL)
		if err == nil {
			js, _ := jetstream.New(nc)
			js.DeleteStream(context.Background(), b.stream)
			nc.Close()
		}
	})
	b.sink = s
	if wrap != nil {
		b.sink = wrap(s)
	}
	if opts == nil {
		opts = &relay.Options{}
	}
	b.reg = prometheus.NewRegistry()
	opts.Registerer = b.reg
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
	}
	b.relay, err = relay.New(cfg, map[string]relay.Sink{"bus": b.sink}, opts)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	b.cancel, b.done = cancel, make(chan error, 1)
	go func() { b.done <- b.relay.Run(rctx) }()
	t.Cleanup(func() { b.stop(t); s.Close() })
	b.waitStreaming(t)
	return b
}

func (b *bundle) stop(t *testing.T) {
	if b.cancel == nil {
		return
	}
	b.cancel()
	b.cancel = nil
	select {
	case err := <-b.done:
		if err != nil {
			t.Errorf("relay.Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("relay did not stop within 30s")
	}
}

func (b *bundle) waitStreaming(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if h := b.relay.Health(context.Background()); h.Streaming {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("relay not streaming after 20s")
}

// consume reads n messages from the stream.
func (b *bundle) consume(t *testing.T, n int) []jetstream.Msg {
	t.Helper()
	nc, err := nats.Connect(b.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, b.stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < n {
		batch, err := cons.Fetch(n-len(out), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if ctx.Err() != nil {
			t.Fatalf("got %d messages, want %d", len(out), n)
		}
	}
	return out
}

func (b *bundle) write(t *testing.T, ctx context.Context, events ...sdk.Event) {
	t.Helper()
	w, err := sdk.New(&sdk.Config{Schema: b.o.Schema})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := b.o.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteBatch(ctx, tx, events); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTraceRunsFromRequestToConsumer(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	b := setup(t, "routes:\n  - {name: r, match: '*', sink: bus, destination: 'PREFIX.ok.{{.EventType}}'}\n",
		&relay.Options{TracerProvider: tp}, nil)

	// The business request: a span around the transaction that writes the event.
	ctx, reqSpan := tp.Tracer("app").Start(context.Background(), "POST /orders")
	b.write(t, ctx, sdk.Event{AggregateType: "order", AggregateID: "1", EventType: "order.created", Payload: []byte(`{}`)})
	reqSpan.End()

	msg := b.consume(t, 1)[0]
	carrier := propagation.MapCarrier{}
	for k, v := range msg.Headers() {
		carrier[k] = v[0] // NATS header names are case-sensitive; the relay writes them lower-case
	}
	consumerCtx := propagation.TraceContext{}.Extract(context.Background(), carrier)
	got := trace.SpanContextFromContext(consumerCtx)
	if got.TraceID() != reqSpan.SpanContext().TraceID() {
		t.Fatalf("consumer's trace id %s, want the request's %s", got.TraceID(), reqSpan.SpanContext().TraceID())
	}
	// The span ends when Publish returns, which can be a moment after the
	// consumer already has the message.
	var relaySpan sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(10 * time.Second); relaySpan == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, s := range exp.GetSpans().Snapshots() {
			if s.SpanKind() == trace.SpanKindProducer {
				relaySpan = s
			}
		}
	}
	if relaySpan == nil {
		t.Fatal("the relay recorded no producer span")
	}
	if relaySpan.Parent().SpanID() != reqSpan.SpanContext().SpanID() {
		t.Errorf("relay span's parent %s, want the request span %s", relaySpan.Parent().SpanID(), reqSpan.SpanContext().SpanID())
	}
	if got.SpanID() != relaySpan.SpanContext().SpanID() {
		t.Errorf("the message carries span %s, want the relay's span %s", got.SpanID(), relaySpan.SpanContext().SpanID())
	}
	attrs := map[string]string{}
	for _, a := range relaySpan.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	for k, want := range map[string]string{"messaging.system": "nats", "messaging.destination.name": b.prefix + ".ok.order.created",
		"messaging.operation.type": "send", "messaging.message.id": msg.Headers().Get("Nats-Msg-Id")} {
		if attrs[k] != want {
			t.Errorf("span attribute %s = %q, want %q", k, attrs[k], want)
		}
	}
}

// flaky fails the first attempt of every message whose event type is
// "flaky.*": a broker hiccup the relay must retry.
type flaky struct {
	relay.Sink
	mu     sync.Mutex
	failed map[string]bool
}

func (f *flaky) Publish(ctx context.Context, msgs []*relay.Message) []error {
	var pass []*relay.Message
	var idx []int
	errs := make([]error, len(msgs))
	f.mu.Lock()
	for i, m := range msgs {
		if strings.HasPrefix(m.Event.EventType, "flaky.") && !f.failed[m.Event.ID.String()] {
			f.failed[m.Event.ID.String()] = true
			errs[i] = fmt.Errorf("test: broker hiccup")
			continue
		}
		pass = append(pass, m)
		idx = append(idx, i)
	}
	f.mu.Unlock()
	if len(pass) > 0 {
		for j, err := range f.Sink.Publish(ctx, pass) {
			errs[idx[j]] = err
		}
	}
	return errs
}

func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func metricValue(body, series string) float64 {
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, series+" "), &v)
			return v
		}
	}
	return -1
}

func TestMetricsCountWhatHappened(t *testing.T) {
	t.Parallel()
	b := setup(t, `routes:
  - {name: good, match: 'good.*', sink: bus, destination: 'PREFIX.ok.{{.EventType}}'}
  - {name: flaky, match: 'flaky.*', sink: bus, destination: 'PREFIX.ok.{{.EventType}}', retry: {initial_interval: 10ms, max_interval: 50ms}}
  - {name: poison, match: 'poison.*', sink: bus, destination: 'PREFIX.nostream.{{.EventType}}'}
`, nil, func(s relay.Sink) relay.Sink { return &flaky{Sink: s, failed: map[string]bool{}} })
	ctx := context.Background()
	var events []sdk.Event
	for i := range 30 {
		events = append(events, sdk.Event{AggregateType: "a", AggregateID: fmt.Sprint(i % 7), EventType: "good.made", Payload: []byte(`{}`)})
	}
	for i := range 5 {
		events = append(events, sdk.Event{AggregateType: "a", AggregateID: fmt.Sprint(i), EventType: "flaky.made", Payload: []byte(`{}`)})
	}
	for i := range 3 {
		events = append(events, sdk.Event{AggregateType: "p", AggregateID: fmt.Sprint(i), EventType: "poison.made", Payload: []byte(`{}`)})
	}
	b.write(t, ctx, events...)
	b.consume(t, 35)

	deadline := time.Now().Add(30 * time.Second)
	var body string
	for time.Now().Before(deadline) {
		body = scrape(t, b.reg)
		if metricValue(body, `outbox_events_dead_lettered_total{reason="permanent",route="poison",sink="bus"}`) == 3 &&
			metricValue(body, `outbox_events_delivered_total{route="flaky",sink="bus"}`) == 5 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for series, want := range map[string]float64{
		`outbox_events_read_total`:                                                        38,
		`outbox_events_delivered_total{route="good",sink="bus"}`:                          30,
		`outbox_events_delivered_total{route="flaky",sink="bus"}`:                         5,
		`outbox_events_retried_total{route="flaky",sink="bus"}`:                           5,
		`outbox_events_dead_lettered_total{reason="permanent",route="poison",sink="bus"}`: 3,
		`outbox_relay_active`:                                                             1,
	} {
		if got := metricValue(body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// The counter counts a dead letter when it is decided; its row is
	// written a moment later.
	var dead int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b.o.Pool.QueryRow(ctx, "SELECT count(*) FROM "+b.o.Schema+".dead_letters WHERE route = 'poison' AND attempts = 1 AND last_error LIKE '%no stream%'").Scan(&dead)
		if dead == 3 {
			break
		}
	}
	if dead != 3 {
		t.Errorf("%d dead letters for the poison route with the error, want 3", dead)
	}
	// Idle: slot lag comes back near zero (other tests write WAL meanwhile, so
	// "near" is a few MB) and nothing is in flight.
	deadline = time.Now().Add(20 * time.Second)
	lag := -1.0
	for time.Now().Before(deadline) {
		body = scrape(t, b.reg)
		lag = metricValue(body, "outbox_slot_lag_bytes")
		if lag >= 0 && lag < 16<<20 && metricValue(body, "outbox_events_in_flight") == 0 && metricValue(body, "outbox_backlog_events") == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if lag < 0 || lag >= 16<<20 {
		t.Errorf("slot lag %v bytes when idle, want under 16 MiB", lag)
	}
	if v := metricValue(body, "outbox_backlog_events"); v != 0 {
		t.Errorf("outbox_backlog_events = %v, want 0", v)
	}
}

func TestRetentionDeletesDeliveredRows(t *testing.T) {
	t.Parallel()
	b := setup(t, "delivery: {retention: 1s, retention_interval: 200ms}\nroutes:\n  - {name: r, match: '*', sink: bus, destination: 'PREFIX.ok.x'}\n", nil, nil)
	ctx := context.Background()
	var events []sdk.Event
	for i := range 50 {
		events = append(events, sdk.Event{AggregateType: "a", AggregateID: fmt.Sprint(i % 5), EventType: "e", Payload: []byte(`{}`)})
	}
	b.write(t, ctx, events...)
	b.consume(t, 50)
	// (internal/retention's own tests check that undelivered rows stay.)
	deadline := time.Now().Add(20 * time.Second)
	var n int
	for time.Now().Before(deadline) {
		b.o.Pool.QueryRow(ctx, "SELECT count(*) FROM "+b.o.Schema+".events").Scan(&n)
		if n == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n != 0 {
		t.Fatalf("%d delivered rows older than the retention are still there", n)
	}
}

// TestReadLingerKeepsEveryEventInOrder runs the relay with read coalescing on
// and off: small transactions (short reads that linger, hand-offs of several
// transactions at once) and a large one (full reads) all arrive, in commit
// order per key.
func TestReadLingerKeepsEveryEventInOrder(t *testing.T) {
	t.Parallel()
	for _, linger := range []string{"2ms", "off"} {
		t.Run(linger, func(t *testing.T) {
			t.Parallel()
			testReadLinger(t, linger)
		})
	}
}

func testReadLinger(t *testing.T, linger string) {
	b := setup(t, "delivery: {read_linger: "+linger+"}\nroutes:\n  - {name: r, match: '*', sink: bus, destination: 'PREFIX.ok.x'}\n", nil, nil)
	ctx := context.Background()
	const keys, small, large = 7, 300, 3000
	var want []string
	for i := range small {
		ev := sdk.Event{AggregateType: "a", AggregateID: fmt.Sprint(i % keys), EventType: "e", Payload: fmt.Appendf(nil, `{"n":%d}`, len(want))}
		want = append(want, string(ev.Payload))
		b.write(t, ctx, ev)
	}
	var batch []sdk.Event
	for range large {
		ev := sdk.Event{AggregateType: "a", AggregateID: fmt.Sprint(len(want) % keys), EventType: "e", Payload: fmt.Appendf(nil, `{"n":%d}`, len(want))}
		want = append(want, string(ev.Payload))
		batch = append(batch, ev)
	}
	b.write(t, ctx, batch...)
	msgs := b.consume(t, len(want))
	perKey := map[string][]string{}
	for _, m := range msgs {
		perKey[m.Headers().Get("ce-subject")] = append(perKey[m.Headers().Get("ce-subject")], string(m.Data()))
	}
	var got []string
	for k := range keys {
		got = append(got, perKey[fmt.Sprint(k)]...)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d messages with a known key, want %d (keys seen: %d)", len(got), len(want), len(perKey))
	}
	wantPerKey := map[string][]string{}
	for i, p := range want {
		k := fmt.Sprint(i % keys)
		wantPerKey[k] = append(wantPerKey[k], p)
	}
	for k, w := range wantPerKey {
		if strings.Join(perKey[k], ",") != strings.Join(w, ",") {
			t.Fatalf("key %s: order or content differs:\n got %.200v\nwant %.200v", k, perKey[k], w)
		}
	}
}
