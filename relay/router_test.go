package relay

import (
	"context"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxrelay/outbox/relay/sink"
)

func routerFor(t testing.TB, src string) *router {
	t.Helper()
	cfg, err := ParseConfig([]byte(src), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(testSinkTypes); err != nil {
		t.Fatal(err)
	}
	r, err := newRouter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func names(rs []*route) string {
	var n []string
	for _, r := range rs {
		n = append(n, r.Name)
	}
	return strings.Join(n, ",")
}

func TestRouterPrecedenceAndFanOut(t *testing.T) {
	r := routerFor(t, `
database: {url: 'postgres://h/db'}
sinks: [{name: s, type: stdout}]
routes:
  - {name: any-order, match: "order.*", sink: s, destination: "a"}
  - {name: created, match: "order.created", sink: s, destination: "b", continue: true}
  - {name: o-c, match: "order.c*", sink: s, destination: "c"}
  - {name: big, match: "payment.*", sink: s, destination: "d", filter: "payload.total > 100"}
  - {name: users, match: "user.*", aggregate_type: account, sink: s, destination: "e"}
default_route: {sink: s, destination: "events.{{.AggregateType}}"}
`)
	cases := []struct {
		ev   Event
		want string
	}{
		// exact first; continue adds the next match, the more specific glob
		{Event{EventType: "order.created", AggregateType: "order"}, "created,o-c"},
		{Event{EventType: "order.cancelled"}, "o-c"},
		{Event{EventType: "order.paid"}, "any-order"},
		{Event{EventType: "payment.made", Payload: []byte(`{"total": 150}`)}, "big"},
		{Event{EventType: "payment.made", Payload: []byte(`{"total": 50}`)}, "default"},
		{Event{EventType: "payment.made", Payload: []byte(`not json`)}, "default"},
		{Event{EventType: "user.made", AggregateType: "account"}, "users"},
		{Event{EventType: "user.made", AggregateType: "person"}, "default"},
	}
	for _, tc := range cases {
		if got := names(r.match(nil, &tc.ev)); got != tc.want {
			t.Errorf("%s/%s: routes %q, want %q", tc.ev.EventType, tc.ev.Payload, got, tc.want)
		}
	}
}

func TestRouterDrop(t *testing.T) {
	r := routerFor(t, "database: {url: 'postgres://h/db'}\nsinks: [{name: s, type: stdout}]\nroutes: [{name: a, match: a, sink: s, destination: d}]\ndefault_route: {drop: true}\n")
	if got := r.match(nil, &Event{EventType: "b"}); len(got) != 0 {
		t.Errorf("unmatched event routed to %s", names(got))
	}
}

func TestDestination(t *testing.T) {
	ev := &Event{EventType: "order.created", AggregateType: "order", AggregateID: "42", TenantID: "t1", Headers: map[string]string{"region": "eu"}}
	for src, want := range map[string]string{
		"orders.{{.EventType}}": "orders.order.created",
		"static":                "static",
		"{{.TenantID}}.{{.AggregateType}}.{{.AggregateID}}":  "t1.order.42",
		`{{index .Headers "region"}}.x`:                      "eu.x",
		`{{if .TenantID}}t.{{.TenantID}}{{else}}none{{end}}`: "t.t1",
	} {
		d, err := ParseDestination(src)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		got, err := d.Render(ev)
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", src, got, err, want)
		}
	}
	d, _ := ParseDestination("{{.TenantID}}")
	if _, err := d.Render(&Event{}); !sink.Permanent(err) {
		t.Errorf("empty destination: error %v, want a permanent error", err)
	}
	for _, bad := range []string{"{{.Nope}}", "{{", "{{.EventType | nosuchfunc}}"} {
		if _, err := ParseDestination(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzDestination(f *testing.F) {
	for _, s := range []string{"orders.{{.EventType}}", "{{.A}}", "{{if .TenantID}}x{{end}}", "{{index .Headers \"k\"}}", "{{"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		d, err := ParseDestination(src)
		if err != nil {
			return
		}
		d.Render(&Event{EventType: "e", AggregateType: "a", AggregateID: "1"})
	})
}

func BenchmarkRoute(b *testing.B) {
	r := routerFor(b, `
database: {url: 'postgres://h/db'}
sinks: [{name: s, type: stdout}]
routes:
  - {name: created, match: "order.created", sink: s, destination: "orders.{{.EventType}}"}
  - {name: o, match: "order.*", sink: s, destination: "orders.{{.EventType}}"}
default_route: {sink: s, destination: "events.{{.AggregateType}}"}
`)
	ev := &Event{EventType: "order.paid", AggregateType: "order", AggregateID: "1"}
	var dst []*route
	b.ReportAllocs()
	for b.Loop() {
		dst = r.match(dst[:0], ev)
		if _, err := dst[0].Destination.Render(ev); err != nil {
			b.Fatal(err)
		}
	}
}

// logRecords collects log records.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r)
	l.mu.Unlock()
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// TestFilterErrorsCountedAndLoggedOncePerInterval: a filter that fails to
// evaluate does not take the event (the default route does); each failure
// counts in outbox_filter_errors_total{route}, and the log has at most one
// line per route per interval, with the count since the previous line and
// the last error.
func TestFilterErrorsCountedAndLoggedOncePerInterval(t *testing.T) {
	r := routerFor(t, `
database: {url: 'postgres://h/db'}
sinks: [{name: s, type: stdout}]
routes:
  - {name: big, match: "payment.*", sink: s, destination: "d", filter: "payload.total > 100"}
  - {name: vip, match: "user.*", sink: s, destination: "e", filter: "payload.tier == 'vip'"}
  - {name: plain, match: "plain.*", sink: s, destination: "f", filter: "event_type != ''"}
default_route: {sink: s, destination: "events"}
`)
	reg := prometheus.NewRegistry()
	logs := &logRecords{}
	r.observe(newMetrics(reg), slog.New(logs))
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }

	failing := &Event{EventType: "payment.made", Payload: []byte(`{"amount": 5}`)}
	for range 3 {
		if got := names(r.match(nil, failing)); got != "default" {
			t.Fatalf("an event whose filter fails went to %q, want the default route", got)
		}
	}
	now = now.Add(30 * time.Second)
	r.match(nil, failing)
	r.match(nil, &Event{EventType: "user.made", Payload: []byte(`not json`)}) // another route logs on its own
	r.match(nil, &Event{EventType: "payment.made", Payload: []byte(`{"total": 500}`)})
	now = now.Add(31 * time.Second)
	r.match(nil, &Event{EventType: "payment.made", Payload: []byte(`{"total": "lots"}`)})

	var lines []string
	for _, rec := range logs.recs {
		lines = append(lines, attr(rec, "route")+" "+attr(rec, "errors_since_last_line"))
		if rec.Level != slog.LevelWarn || attr(rec, "error") == "" || attr(rec, "filter") == "" {
			t.Errorf("log line %q: want a warning with the error and the filter", rec.Message)
		}
	}
	if got, want := strings.Join(lines, "; "), "big 1; vip 1; big 4"; got != want {
		t.Errorf("log lines (route, errors since the last line): %q, want %q", got, want)
	}
	if last := attr(logs.recs[2], "error"); last != "no such overload" {
		t.Errorf("the line gives error %q, want the last error (\"no such overload\": a string compared with a number)", last)
	}
	counts := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "outbox_filter_errors_total" {
			for _, m := range mf.GetMetric() {
				counts[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if want := map[string]float64{"big": 5, "vip": 1, "plain": 0}; !maps.Equal(counts, want) {
		t.Errorf("outbox_filter_errors_total by route: %v, want %v", counts, want)
	}
}
