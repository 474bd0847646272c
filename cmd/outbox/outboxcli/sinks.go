package outboxcli

import (
	"context"
	"log/slog"

	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/registry"
)

// sinkTypes are the sink types `outbox relay` builds.
var sinkTypes = registry.Default()

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
	if err := sinkTypes.Check(cfg, path); err != nil {
		return nil, err
	}
	return cfg, nil
}

// buildSinks connects every configured sink that a route uses.
func buildSinks(ctx context.Context, cfg *relay.Config, logger *slog.Logger) (map[string]sink.Sink, error) {
	return sinkTypes.Open(ctx, cfg, logger)
}

func closeSinks(sinks map[string]sink.Sink) {
	registry.Close(sinks)
}
