package relay

import (
	"go.yaml.in/yaml/v3"

	"github.com/outboxrelay/outbox/internal/didyoumean"
)

// Forwarders for callers that issue 13 is moving (the CLI's and the bench's
// sink registries, the handler sink, the kafka sink's tests): not part of the
// relay's API, and removed once those callers use what each names.

// NewRouter compiles cfg's routes.
//
// Deprecated: use SinkDestinations.
func NewRouter(cfg *Config) (*router, error) { return newRouter(cfg) }

// Routes lists every route, the default route last.
//
// Deprecated: use SinkDestinations.
func (r *router) Routes() []*route { return r.routes }

// Suggest returns the candidate closest to s, or "".
//
// Deprecated: use internal/didyoumean.
func Suggest(s string, candidates []string) string { return didyoumean.Suggest(s, candidates) }

// CheckKeys rejects mapping keys of n that v's yaml tags (or extra) do not
// name.
//
// Deprecated: use SinkConfig.Decode.
func CheckKeys(n *yaml.Node, v any, extra ...string) error { return knownKeys(n, v, extra...) }
