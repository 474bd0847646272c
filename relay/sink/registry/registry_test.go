package registry

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	natssink "github.com/outboxrelay/outbox/relay/sink/nats"
)

func parse(t *testing.T, src string) *relay.Config {
	t.Helper()
	cfg, err := relay.ParseConfig([]byte("database: {url: 'postgres://h/db'}\n"+src), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestNames(t *testing.T) {
	if got, want := Default().Names(), []string{"kafka", "nats", "rabbitmq", "redis", "stdout"}; !slices.Equal(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
}

// TestCheck: Check refuses what a sink's constructor would, naming the file,
// line and key, without connecting (every broker address is unreachable).
func TestCheck(t *testing.T) {
	t.Parallel()
	const routes = "routes:\n  - {name: r, match: '*', sink: bus, destination: x}\n"
	for name, c := range map[string]struct{ sink, want string }{
		"nats without stream":   {"{name: bus, type: nats, url: 'nats://127.0.0.1:1'}", "t.yaml:3: sinks.bus: stream: required"},
		"nats negative timeout": {"{name: bus, type: nats, stream: S, publish_timeout: -1s}", "publish_timeout: -1s is negative"},
		"nats bad url":          {"{name: bus, type: nats, stream: S, url: 'nats://u:hunter2%zz@h'}", "url: does not parse"},
		"nats bad duration":     {"{name: bus, type: nats, stream: S, duplicate_window: soon}", "write it like 200ms"},
		"unknown key":           {"{name: bus, type: kafka, brokers: ['127.0.0.1:1'], batch_timout: 1s}", "batch_timout"},
		"kafka validate":        {"{name: bus, type: kafka}", "t.yaml:3: sinks.bus: brokers"},
		"rabbitmq validate":     {"{name: bus, type: rabbitmq, url: 'http://127.0.0.1:1/'}", "t.yaml:3: sinks.bus: "},
		"redis validate":        {"{name: bus, type: redis, url: 'http://127.0.0.1:1/'}", "t.yaml:3: sinks.bus: "},
		"stdout unknown key":    {"{name: bus, type: stdout, prety: true}", "prety"},
		"unknown type":          {"{name: bus, type: kafak}", `did you mean "kafka"`},
	} {
		cfg := parse(t, "sinks:\n  - "+c.sink+"\n"+routes)
		err := Default().Check(cfg, "t.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: Check = %v, want an error with %q", name, err, c.want)
		}
	}
	cfg := parse(t, "sinks:\n  - {name: bus, type: nats, url: 'nats://127.0.0.1:1', stream: S, publish_timeout: 3s, duplicate_window: 1m}\n"+routes)
	if err := Default().Check(cfg, "t.yaml"); err != nil {
		t.Errorf("Check of a good nats entry: %v", err)
	}
	var c natssink.Config
	if err := cfg.Sinks[0].Decode(&c); err != nil || c.PublishTimeout != 3*time.Second || c.DuplicateWindow != time.Minute {
		t.Errorf("nats durations decoded as %v, %v (%v), want 3s, 1m", c.PublishTimeout, c.DuplicateWindow, err)
	}
}

type probe struct {
	name   string
	closed *[]string
}

func (p *probe) Publish(context.Context, []*sink.Message) []error { return nil }
func (p *probe) Close() error {
	*p.closed = append(*p.closed, p.name)
	return nil
}

// TestOpen: Open builds the sinks that routes use, with their routes'
// destinations (the default route's included), leaves out the others, and
// closes what it built when one fails.
func TestOpen(t *testing.T) {
	t.Parallel()
	var closed []string
	got := map[string][]string{}
	reg := Registry{
		"probe": {Check: func(*relay.SinkConfig) error { return nil },
			Build: func(_ context.Context, sc *relay.SinkConfig, dests []*relay.Destination, _ *slog.Logger) (sink.Sink, error) {
				for _, d := range dests {
					got[sc.Name] = append(got[sc.Name], d.String())
				}
				return &probe{sc.Name, &closed}, nil
			}},
		"broken": {Check: func(*relay.SinkConfig) error { return nil },
			Build: func(context.Context, *relay.SinkConfig, []*relay.Destination, *slog.Logger) (sink.Sink, error) {
				return nil, errors.New("no broker")
			}},
	}
	cfg := parse(t, `sinks:
  - {name: a, type: probe}
  - {name: unused, type: broken}
  - {name: b, type: probe}
routes:
  - {name: r1, match: 'x.*', sink: a, destination: 'x.{{.EventType}}'}
  - {name: r2, match: 'y', sink: b, destination: y}
  - {name: r3, match: 'z', sink: a, destination: z}
default_route: {sink: b, destination: rest}
`)
	if err := reg.Check(cfg, "t.yaml"); err != nil {
		t.Fatal(err)
	}
	sinks, err := reg.Open(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if len(sinks) != 2 || sinks["a"] == nil || sinks["b"] == nil {
		t.Errorf("Open = %v, want sinks a and b", sinks)
	}
	if !slices.Equal(got["a"], []string{"x.{{.EventType}}", "z"}) || !slices.Equal(got["b"], []string{"y", "rest"}) {
		t.Errorf("destinations given to Build: %v", got)
	}
	if err := Close(sinks); err != nil || len(closed) != 2 {
		t.Errorf("Close: %v, closed %v", err, closed)
	}

	closed = nil
	cfg = parse(t, `sinks:
  - {name: a, type: probe}
  - {name: bad, type: broken}
routes:
  - {name: r1, match: 'x', sink: a, destination: x}
  - {name: r2, match: 'y', sink: bad, destination: y}
`)
	if _, err := reg.Open(context.Background(), cfg, slog.New(slog.DiscardHandler)); err == nil || err.Error() != "sink bad: no broker" {
		t.Errorf("Open with a failing sink = %v, want sink bad: no broker", err)
	}
	if !slices.Equal(closed, []string{"a"}) {
		t.Errorf("closed %v after the failure, want [a]", closed)
	}
}
