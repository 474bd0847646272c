package relay

import (
	"cmp"
	"slices"
)

// LibrarySinkType is the sink type NewConfig declares for sinks that are built
// in Go and handed to New (relay/sink/handler, or any Sink of the program's
// own). It names the sink's messaging system in traces.
const LibrarySinkType = "go"

// DefaultLibraryDestination is the destination NewConfig gives a route that
// has none: the event type.
const DefaultLibraryDestination = "{{.EventType}}"

// NewConfig completes a configuration written in Go instead of loaded from
// relay.yaml, for a program that runs the relay in-process:
//
//	cfg, err := relay.NewConfig(relay.Config{
//		Database: relay.DatabaseConfig{URL: os.Getenv("DATABASE_URL"), Schema: "app"},
//		Routes:   []relay.RouteConfig{{Name: "app", Match: "*", Sink: "app"}},
//	})
//	r, err := relay.New(cfg, map[string]relay.Sink{"app": handlers}, nil)
//
// It works on a copy of c and:
//   - declares a sink entry of type LibrarySinkType for every sink name the
//     routes and the default route use that c.Sinks does not list (and gives
//     listed entries without a type that type), so Sinks can be left empty;
//   - sets the Destination of a route (and of the default route) that has
//     none to DefaultLibraryDestination, since in-process sinks usually
//     ignore it;
//   - fills every other default exactly as LoadConfig does (schema "outbox",
//     slot "outbox_relay", retries, batch sizes, ...);
//   - validates the result as the relay does at start-up, returning every
//     problem (a *ConfigError each, naming the field).
//
// The sinks themselves are passed to New under the same names. The admin and
// log sections are not used by the relay package (the CLI reads them): set up
// the program's own logger and metrics through Options.
func NewConfig(c Config) (*Config, error) {
	c.Sinks = slices.Clone(c.Sinks)
	c.Routes = slices.Clone(c.Routes)
	if c.DefaultRoute != nil {
		d := *c.DefaultRoute
		c.DefaultRoute = &d
	}
	declared := map[string]bool{}
	var types []string
	for i := range c.Sinks {
		s := &c.Sinks[i]
		s.Type = cmp.Or(s.Type, LibrarySinkType)
		declared[s.Name] = true
		if !slices.Contains(types, s.Type) {
			types = append(types, s.Type)
		}
	}
	declare := func(name string) {
		if name != "" && !declared[name] {
			declared[name] = true
			c.Sinks = append(c.Sinks, SinkConfig{Name: name, Type: LibrarySinkType})
		}
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		r.Destination = cmp.Or(r.Destination, DefaultLibraryDestination)
		declare(r.Sink)
	}
	if d := c.DefaultRoute; d != nil && !d.Drop {
		d.Destination = cmp.Or(d.Destination, DefaultLibraryDestination)
		declare(d.Sink)
	}
	if !slices.Contains(types, LibrarySinkType) {
		types = append(types, LibrarySinkType)
	}
	c.fill()
	if err := c.Validate(types); err != nil {
		return nil, err
	}
	return &c, nil
}
