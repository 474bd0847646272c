package relay_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/relay"
)

func TestNewConfig(t *testing.T) {
	in := relay.Config{
		Database: relay.DatabaseConfig{URL: "postgres://localhost/app", Schema: "app"},
		Routes: []relay.RouteConfig{
			{Name: "orders", Match: "order.*", Sink: "handlers"},
			{Name: "audit", Match: "*", Sink: "audit", Destination: "audit.{{.AggregateType}}"},
		},
		DefaultRoute: &relay.DefaultRouteConfig{Sink: "fallback"},
	}
	cfg, err := relay.NewConfig(in)
	if err != nil {
		t.Fatal(err)
	}
	var sinks []string
	for _, s := range cfg.Sinks {
		if s.Type != relay.LibrarySinkType {
			t.Errorf("sink %s has type %q, want %q", s.Name, s.Type, relay.LibrarySinkType)
		}
		sinks = append(sinks, s.Name)
	}
	if got := strings.Join(sinks, ","); got != "handlers,audit,fallback" {
		t.Errorf("declared sinks %s, want handlers,audit,fallback", got)
	}
	if d := cfg.Routes[0].Destination; d != relay.DefaultLibraryDestination {
		t.Errorf("route without destination got %q", d)
	}
	if d := cfg.Routes[1].Destination; d != "audit.{{.AggregateType}}" {
		t.Errorf("route destination changed to %q", d)
	}
	if d := cfg.DefaultRoute.Destination; d != relay.DefaultLibraryDestination {
		t.Errorf("default route destination %q", d)
	}
	// Defaults as LoadConfig fills them.
	if cfg.Database.Slot != "outbox_relay" || cfg.Database.Publication != "outbox_events" || cfg.Source != "/outbox/app" {
		t.Errorf("database defaults not filled: %+v, source %q", cfg.Database, cfg.Source)
	}
	if r := cfg.Routes[0].Retry; r.MaxAttempts != 10 || r.InitialInterval.D() != 200*time.Millisecond || r.MaxInterval.D() != 30*time.Second {
		t.Errorf("retry defaults not filled: %+v", r)
	}
	if cfg.Delivery.BatchSize == 0 || cfg.Delivery.MaxPending == 0 || cfg.Delivery.OnDelivered != "mark" {
		t.Errorf("delivery defaults not filled: %+v", cfg.Delivery)
	}
	// The caller's value is not modified.
	if in.Routes[0].Destination != "" || in.DefaultRoute.Destination != "" || in.Sinks != nil {
		t.Errorf("NewConfig modified its argument: %+v", in)
	}
	// What New accepts.
	byName := map[string]relay.Sink{"handlers": nopSink{}, "audit": nopSink{}, "fallback": nopSink{}}
	if _, err := relay.New(cfg, byName, nil); err != nil {
		t.Errorf("New: %v", err)
	}
}

// nopSink accepts every message.
type nopSink struct{}

func (nopSink) Publish(context.Context, []*relay.Message) []error { return nil }
func (nopSink) Close() error                                      { return nil }

func TestNewConfigDeclaredSinks(t *testing.T) {
	cfg, err := relay.NewConfig(relay.Config{
		Database: relay.DatabaseConfig{URL: "postgres://localhost/app"},
		Sinks:    []relay.SinkConfig{{Name: "bus", Type: "nats"}, {Name: "app"}},
		Routes:   []relay.RouteConfig{{Name: "a", Match: "a.*", Sink: "bus", Destination: "a"}, {Name: "b", Match: "b.*", Sink: "app"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sinks) != 2 || cfg.Sinks[0].Type != "nats" || cfg.Sinks[1].Type != relay.LibrarySinkType {
		t.Errorf("sinks %+v: want the declared ones, the untyped one typed %q", cfg.Sinks, relay.LibrarySinkType)
	}
}

func TestNewConfigErrors(t *testing.T) {
	_, err := relay.NewConfig(relay.Config{
		Routes: []relay.RouteConfig{{Name: "a", Match: "order.[", Sink: "app"}, {Match: "*", Sink: "app"}},
	})
	if !errors.Is(err, relay.ErrConfig) {
		t.Fatalf("err = %v, want a config error", err)
	}
	for _, want := range []string{"database.url", "routes[0].match", "routes[1]: a route needs a name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := relay.NewConfig(relay.Config{Database: relay.DatabaseConfig{URL: "postgres://x/y"}}); err == nil || !strings.Contains(err.Error(), "no routes") {
		t.Errorf("no routes: %v", err)
	}
}
