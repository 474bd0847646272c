package relay

import (
	"strings"
	"testing"
)

func routerFor(t testing.TB, src string) *Router {
	t.Helper()
	cfg, err := ParseConfig([]byte(src), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(testSinkTypes); err != nil {
		t.Fatal(err)
	}
	r, err := NewRouter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func names(rs []*Route) string {
	var n []string
	for _, r := range rs {
		n = append(n, r.Name)
	}
	return strings.Join(n, ",")
}

func TestRouterPrecedenceAndFanOut(t *testing.T) {
	r := routerFor(t, `
database: {url: x}
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
		if got := names(r.Match(nil, &tc.ev)); got != tc.want {
			t.Errorf("%s/%s: routes %q, want %q", tc.ev.EventType, tc.ev.Payload, got, tc.want)
		}
	}
}

func TestRouterDrop(t *testing.T) {
	r := routerFor(t, "database: {url: x}\nsinks: [{name: s, type: stdout}]\nroutes: [{name: a, match: a, sink: s, destination: d}]\ndefault_route: {drop: true}\n")
	if got := r.Match(nil, &Event{EventType: "b"}); len(got) != 0 {
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
	if _, err := d.Render(&Event{}); !Permanent(err) {
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
database: {url: x}
sinks: [{name: s, type: stdout}]
routes:
  - {name: created, match: "order.created", sink: s, destination: "orders.{{.EventType}}"}
  - {name: o, match: "order.*", sink: s, destination: "orders.{{.EventType}}"}
default_route: {sink: s, destination: "events.{{.AggregateType}}"}
`)
	ev := &Event{EventType: "order.paid", AggregateType: "order", AggregateID: "1"}
	var dst []*Route
	b.ReportAllocs()
	for b.Loop() {
		dst = r.Match(dst[:0], ev)
		if _, err := dst[0].Destination.Render(ev); err != nil {
			b.Fatal(err)
		}
	}
}
