package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/sdk"
)

// TestUnroutedEventsAreMarked: an event no route takes (default_route: {drop:
// true}, no default route, a filter that fails to evaluate) ends like a
// delivered one: its row is marked, so the backlog drains to 0, and nothing
// stays in flight. Filter evaluation errors are counted per route.
func TestUnroutedEventsAreMarked(t *testing.T) {
	t.Parallel()
	const keep = "  - {name: r, match: 'keep.*', sink: bus, destination: 'PREFIX.ok.x'}\n"
	cases := map[string]struct {
		routes     string
		filterErrs bool
	}{
		"drop default":     {routes: "routes:\n" + keep + "default_route: {drop: true}\n"},
		"no default route": {routes: "routes:\n" + keep},
		"failing filter": {routes: "routes:\n" + keep +
			"  - {name: f, match: 'skip.*', sink: bus, destination: 'PREFIX.ok.y', filter: 'payload.missing.deeper > 1'}\n",
			filterErrs: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.routes, nil, nil)
			ctx := context.Background()
			const skipped = 20
			skip := func(n int) []sdk.Event {
				var events []sdk.Event
				for i := range n {
					events = append(events, sdk.Event{AggregateType: "a", AggregateID: fmt.Sprint(i % 3), EventType: "skip.x", Payload: []byte(`{"n":1}`)})
				}
				return events
			}
			b.write(t, ctx, skip(skipped)...) // a transaction of unrouted events only
			b.write(t, ctx, append(skip(3), sdk.Event{AggregateType: "a", AggregateID: "0", EventType: "keep.x", Payload: []byte(`{}`)})...)
			b.consume(t, 1)

			waitUnmarked(t, b, 0)
			body := waitMetric(t, b.reg, "outbox_backlog_events", 0)
			for series, want := range map[string]float64{
				"outbox_events_read_total":     skipped + 4,
				"outbox_events_unrouted_total": skipped + 3,
				"outbox_events_in_flight":      0,
			} {
				if got := metricValue(body, series); got != want {
					t.Errorf("%s = %v, want %v", series, got, want)
				}
			}
			if tc.filterErrs {
				if got := metricValue(body, `outbox_filter_errors_total{route="f"}`); got != skipped+3 {
					t.Errorf(`outbox_filter_errors_total{route="f"} = %v, want %d`, got, skipped+3)
				}
			}
		})
	}
}

// TestSnapshotSkipsDroppedRows: rows dropped as unrouted are marked, so after
// the slot is lost a relay whose config now takes them does not publish them
// from the snapshot.
func TestSnapshotSkipsDroppedRows(t *testing.T) {
	t.Parallel()
	b := setup(t, "routes:\n  - {name: r, match: 'keep.*', sink: bus, destination: 'PREFIX.ok.{{.EventType}}'}\ndefault_route: {drop: true}\n", nil, nil)
	ctx := context.Background()
	// One key: had the snapshot published the dropped rows, they would
	// arrive before keep.second.
	var events []sdk.Event
	for range 5 {
		events = append(events, sdk.Event{AggregateType: "a", AggregateID: "k", EventType: "skip.x", Payload: []byte(`{}`)})
	}
	b.write(t, ctx, append(events, sdk.Event{AggregateType: "a", AggregateID: "k", EventType: "keep.first", Payload: []byte(`{}`)})...)
	b.consume(t, 1)
	b.stop(t) // drains: every finished event is marked before Run returns
	testutil.DropSlot(t, b.o.Pool, b.o.Slot)

	b.restart(t, "routes:\n  - {name: all, match: '*', sink: bus, destination: 'PREFIX.ok.{{.EventType}}'}\n")
	b.write(t, ctx, sdk.Event{AggregateType: "a", AggregateID: "k", EventType: "keep.second", Payload: []byte(`{}`)})
	msgs := b.consume(t, 2)
	if got := msgs[1].Subject(); got != b.prefix+".ok.keep.second" {
		t.Fatalf("after the slot was recreated the relay published %s first, want %s.ok.keep.second (a dropped row was published from the snapshot)", got, b.prefix)
	}
	if n := streamMsgs(t, b); n != 2 {
		t.Errorf("the stream holds %d messages, want 2", n)
	}
}

// restart starts a new relay over b's outbox and sink with other routes.
func (b *bundle) restart(t *testing.T, routesYAML string) {
	t.Helper()
	b.stop(t)
	src := fmt.Sprintf("database:\n  url: %s\n  schema: %s\n  slot: %s\n  publication: %s\n  sample_interval: 200ms\nsinks:\n  - {name: bus, type: nats}\n%s",
		b.o.DatabaseURL, b.o.Schema, b.o.Slot, b.o.Publication, strings.ReplaceAll(routesYAML, "PREFIX", b.prefix))
	cfg, err := relay.ParseConfig([]byte(src), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate([]string{"nats"}); err != nil {
		t.Fatal(err)
	}
	b.reg = prometheus.NewRegistry()
	b.relay, err = relay.New(cfg, map[string]relay.Sink{"bus": b.sink}, &relay.Options{Registerer: b.reg, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done = cancel, make(chan error, 1)
	go func() { b.done <- b.relay.Run(rctx) }()
	b.waitStreaming(t)
}

// waitUnmarked waits until the outbox holds want rows without delivered_at.
func waitUnmarked(t *testing.T, b *bundle, want int) {
	t.Helper()
	var n int
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err := b.o.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+b.o.Schema+".events WHERE delivered_at IS NULL").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == want {
			return
		}
	}
	t.Fatalf("%d rows are not marked delivered, want %d", n, want)
}

// waitMetric waits until series has value want and returns the scrape.
func waitMetric(t *testing.T, reg *prometheus.Registry, series string, want float64) string {
	t.Helper()
	var body string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		body = scrape(t, reg)
		if metricValue(body, series) == want {
			return body
		}
	}
	t.Fatalf("%s = %v, want %v", series, metricValue(body, series), want)
	return body
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

func streamMsgs(t *testing.T, b *bundle) uint64 {
	t.Helper()
	nc, err := nats.Connect(b.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), b.stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
