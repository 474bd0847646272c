// Package registry builds the relay's sinks from the sinks section of
// relay.yaml: one Type per sink type, shared by `outbox relay`, `outbox
// config check` and the bench (cmd/outbox-bench), so that a config check
// refuses exactly what the relay would.
//
// A sink type is checked before anything connects: Check decodes the entry
// (refusing unknown keys) and runs the sink config's Validate, the same
// Validate the sink's constructor runs before it dials.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/kafka"
	natssink "github.com/outboxrelay/outbox/relay/sink/nats"
	"github.com/outboxrelay/outbox/relay/sink/rabbitmq"
	redissink "github.com/outboxrelay/outbox/relay/sink/redis"
	"github.com/outboxrelay/outbox/relay/sink/stdout"
)

// Type checks and builds one type of sink.
type Type struct {
	// Check decodes the sink's entry, reporting unknown keys and bad values
	// without connecting.
	Check func(sc *relay.SinkConfig) error
	// Build decodes the sink's entry and connects. dests are the
	// destinations of the routes that use the sink.
	Build func(ctx context.Context, sc *relay.SinkConfig, dests []*relay.Destination, logger *slog.Logger) (sink.Sink, error)
}

// Registry maps the sink types of relay.yaml (a sink's type key) to how to
// check and build them.
type Registry map[string]Type

// Default returns a new Registry of this module's sinks: kafka, nats,
// rabbitmq, redis and stdout. The caller may add types to it.
func Default() Registry {
	return Registry{
		"kafka":    Plain(kafka.New),
		"rabbitmq": Plain(rabbitmq.New),
		"redis":    Plain(redissink.New),
		"nats": {
			Check: Validated[natssink.Config],
			Build: func(ctx context.Context, sc *relay.SinkConfig, dests []*relay.Destination, logger *slog.Logger) (sink.Sink, error) {
				var c natssink.Config
				if err := sc.Decode(&c); err != nil {
					return nil, err
				}
				if len(c.Subjects) == 0 {
					c.Subjects = natssink.SubjectsFor(dests)
				}
				return natssink.New(ctx, c, logger)
			},
		},
		"stdout": {
			Check: func(sc *relay.SinkConfig) error {
				var c stdout.Config
				return sc.Decode(&c)
			},
			Build: func(_ context.Context, sc *relay.SinkConfig, _ []*relay.Destination, _ *slog.Logger) (sink.Sink, error) {
				var c stdout.Config
				if err := sc.Decode(&c); err != nil {
					return nil, err
				}
				return stdout.New(nil, c), nil
			},
		},
	}
}

// Validated decodes a sink's entry into a C and runs C's Validate (which the
// sink's constructor runs too, before it connects), so that a config check
// refuses what the relay would. A Validate error is a *relay.ConfigError
// naming the sink.
func Validated[C interface{ Validate() error }](sc *relay.SinkConfig) error {
	var c C
	if err := sc.Decode(&c); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return &relay.ConfigError{Line: sc.Line, Field: "sinks." + sc.Name, Msg: err.Error()}
	}
	return nil
}

// Plain is the Type of a sink whose config needs nothing from the routes:
// Check is Validated[C], Build decodes a C and calls newSink.
func Plain[C interface{ Validate() error }, S sink.Sink](newSink func(context.Context, C, *slog.Logger) (S, error)) Type {
	return Type{
		Check: Validated[C],
		Build: func(ctx context.Context, sc *relay.SinkConfig, _ []*relay.Destination, logger *slog.Logger) (sink.Sink, error) {
			var c C
			if err := sc.Decode(&c); err != nil {
				return nil, err
			}
			return newSink(ctx, c, logger)
		},
	}
}

// Names returns the sink types, sorted.
func (r Registry) Names() []string {
	return slices.Sorted(maps.Keys(r))
}

// Check validates cfg as the relay does before it connects: cfg.Validate
// with r's types, then every sink entry of a known type. It returns every
// error found, joined; a *relay.ConfigError without a file is given path.
func (r Registry) Check(cfg *relay.Config, path string) error {
	errs := []error{cfg.Validate(r.Names())}
	for i := range cfg.Sinks {
		sc := &cfg.Sinks[i]
		t, ok := r[sc.Type]
		if !ok {
			continue // cfg.Validate named it
		}
		if err := t.Check(sc); err != nil {
			var ce *relay.ConfigError
			if errors.As(err, &ce) && ce.File == "" {
				ce.File = path
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Open builds every sink of cfg that a route uses, keyed by name; a sink
// that no route uses is logged and left out. Each sink logs to
// logger.With("sink", name). When one fails, the sinks already built are
// closed. Run Check first: Open assumes every type is known.
func (r Registry) Open(ctx context.Context, cfg *relay.Config, logger *slog.Logger) (map[string]sink.Sink, error) {
	dests, err := destinations(cfg)
	if err != nil {
		return nil, err
	}
	sinks := map[string]sink.Sink{}
	for i := range cfg.Sinks {
		sc := &cfg.Sinks[i]
		if _, used := dests[sc.Name]; !used {
			logger.Warn("sink is not used by any route", "sink", sc.Name)
			continue
		}
		t, ok := r[sc.Type]
		if !ok {
			Close(sinks)
			return nil, fmt.Errorf("sink %s: unknown type %q (known: %v)", sc.Name, sc.Type, r.Names())
		}
		s, err := t.Build(ctx, sc, dests[sc.Name], logger.With("sink", sc.Name))
		if err != nil {
			Close(sinks)
			return nil, fmt.Errorf("sink %s: %w", sc.Name, err)
		}
		sinks[sc.Name] = s
	}
	return sinks, nil
}

// destinations returns the destination templates of the routes, the
// default route's included, by the sink they use.
func destinations(cfg *relay.Config) (map[string][]*relay.Destination, error) {
	return relay.SinkDestinations(cfg)
}

// Close closes every sink and returns their errors, joined.
func Close(sinks map[string]sink.Sink) error {
	var errs []error
	for name, s := range sinks {
		if err := s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("sink %s: close: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
