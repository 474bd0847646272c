package outboxcli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink/kafka"
	natssink "github.com/outboxrelay/outbox/relay/sink/nats"
	"github.com/outboxrelay/outbox/relay/sink/rabbitmq"
	redissink "github.com/outboxrelay/outbox/relay/sink/redis"
	"github.com/outboxrelay/outbox/relay/sink/stdout"
)

// sinkType knows how to check and build one type of sink.
type sinkType struct {
	// check decodes the sink's entry, reporting unknown keys and bad values
	// without connecting.
	check func(sc *relay.SinkConfig) error
	// build connects. dests are the destinations of the routes that use the sink.
	build func(ctx context.Context, sc *relay.SinkConfig, dests []*relay.Destination, logger *slog.Logger) (relay.Sink, error)
}

// checkSink decodes a sink's entry into a C and runs C's Validate (which the
// sink's constructor runs too, before it connects), so that `outbox config
// check` refuses what the relay would.
func checkSink[C interface{ Validate() error }](sc *relay.SinkConfig) error {
	var c C
	if err := sc.Decode(&c); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return &relay.ConfigError{Line: sc.Line, Field: "sinks." + sc.Name, Msg: err.Error()}
	}
	return nil
}

// plainSink is a sinkType for a sink whose config needs nothing from the routes.
func plainSink[C interface{ Validate() error }, S relay.Sink](newSink func(context.Context, C, *slog.Logger) (S, error)) sinkType {
	return sinkType{
		check: checkSink[C],
		build: func(ctx context.Context, sc *relay.SinkConfig, _ []*relay.Destination, logger *slog.Logger) (relay.Sink, error) {
			var c C
			if err := sc.Decode(&c); err != nil {
				return nil, err
			}
			return newSink(ctx, c, logger)
		},
	}
}

var sinkTypes = map[string]sinkType{
	"kafka":    plainSink(kafka.New),
	"rabbitmq": plainSink(rabbitmq.New),
	"redis":    plainSink(redissink.New),
	"nats": {
		check: checkSink[natssink.Config],
		build: func(ctx context.Context, sc *relay.SinkConfig, dests []*relay.Destination, logger *slog.Logger) (relay.Sink, error) {
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
		check: func(sc *relay.SinkConfig) error {
			var c stdout.Config
			return sc.Decode(&c)
		},
		build: func(ctx context.Context, sc *relay.SinkConfig, _ []*relay.Destination, _ *slog.Logger) (relay.Sink, error) {
			var c stdout.Config
			if err := sc.Decode(&c); err != nil {
				return nil, err
			}
			return stdout.New(nil, c), nil
		},
	},
}

func sinkTypeNames() []string {
	var names []string
	for n := range sinkTypes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// loadConfig loads and validates relay.yaml: everything the relay checks
// before it connects. `outbox relay` and `outbox config check` both start
// with it, so a config check passes exactly the configs the relay starts
// with (up to what needs a connection: a port in use, a broker or database
// that is not there).
func loadConfig(path string) (*relay.Config, error) {
	if path == "" {
		return nil, usageErr("pass --config relay.yaml (see docs/configuration.md)", "no config file given")
	}
	cfg, err := relay.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	errs := []error{cfg.Validate(sinkTypeNames())}
	for i := range cfg.Sinks {
		sc := &cfg.Sinks[i]
		if t, ok := sinkTypes[sc.Type]; ok {
			if err := t.check(sc); err != nil {
				var ce *relay.ConfigError
				if errors.As(err, &ce) && ce.File == "" {
					ce.File = path
				}
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// buildSinks connects every configured sink that a route uses.
func buildSinks(ctx context.Context, cfg *relay.Config, logger *slog.Logger) (map[string]relay.Sink, error) {
	router, err := relay.NewRouter(cfg)
	if err != nil {
		return nil, err
	}
	dests := map[string][]*relay.Destination{}
	for _, rt := range router.Routes() {
		dests[rt.Sink] = append(dests[rt.Sink], rt.Destination)
	}
	sinks := map[string]relay.Sink{}
	for i := range cfg.Sinks {
		sc := &cfg.Sinks[i]
		if _, used := dests[sc.Name]; !used {
			logger.Warn("sink is not used by any route", "sink", sc.Name)
			continue
		}
		s, err := sinkTypes[sc.Type].build(ctx, sc, dests[sc.Name], logger.With("sink", sc.Name))
		if err != nil {
			closeSinks(sinks)
			return nil, fmt.Errorf("sink %s: %w", sc.Name, err)
		}
		sinks[sc.Name] = s
	}
	return sinks, nil
}

func closeSinks(sinks map[string]relay.Sink) {
	for _, s := range sinks {
		s.Close()
	}
}
