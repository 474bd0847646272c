package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Options are the relay's collaborators. A nil *Options means defaults.
type Options struct {
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the relay's metrics. Defaults to none.
	Registerer prometheus.Registerer
	// Version is recorded as part of the active relay's identity. Defaults to "dev".
	Version string
	// TracerProvider, when set, makes the relay start a producer span per
	// delivery attempt, a child of the trace the SDK captured, and send its
	// context with the message. Nil means no spans (the event's own
	// traceparent is still sent).
	TracerProvider trace.TracerProvider
	// Propagator reads and writes trace context in headers. Defaults to W3C
	// TraceContext.
	Propagator propagation.TextMapPropagator
	// DrainTimeout bounds how long a stopping relay waits for deliveries in
	// flight before it confirms its position and exits. Defaults to 30s.
	DrainTimeout time.Duration
}

// Relay is one relay process's worth of work. Several may run against one
// outbox; exactly one is active at a time.
type Relay struct {
	cfg     *Config
	router  *router
	sinks   map[string]Sink
	logger  *slog.Logger
	metrics *metrics
	drain   time.Duration
	version string
	tracing *tracing

	active    atomic.Bool
	streaming atomic.Bool
	dbOK      atomic.Bool
	mu        sync.Mutex
	lastErr   error
}

// Errors that stop the relay: retrying cannot fix them.
var (
	// ErrNotMigrated means the outbox schema has not been created.
	ErrNotMigrated = errors.New("the outbox schema is not migrated")
	// ErrWALLevel means PostgreSQL is not configured for logical replication.
	ErrWALLevel = errors.New("wal_level is not logical")
	// ErrSlotPlugin means the slot exists with another output plugin.
	ErrSlotPlugin = errors.New("replication slot uses another output plugin")
)

// FatalError is an error the relay cannot recover from by retrying; the
// process should exit and an operator act on the message.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

func fatal(err error) error { return &FatalError{Err: err} }

// New checks cfg (which must have passed Validate), compiles its routes and
// returns a relay that delivers to sinks (by sink name).
func New(cfg *Config, sinks map[string]Sink, opts *Options) (*Relay, error) {
	if opts == nil {
		opts = &Options{}
	}
	router, err := newRouter(cfg)
	if err != nil {
		return nil, err
	}
	for _, rt := range router.routes {
		if sinks[rt.Sink] == nil {
			return nil, fmt.Errorf("relay: route %q: no sink named %q was given", rt.Name, rt.Sink)
		}
	}
	r := &Relay{cfg: cfg, router: router, sinks: sinks, logger: opts.Logger, drain: opts.DrainTimeout, version: cmp.Or(opts.Version, "dev")}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	if r.drain == 0 {
		r.drain = 30 * time.Second
	}
	r.metrics = newMetrics(opts.Registerer)
	router.observe(r.metrics, r.logger)
	r.tracing = newTracing(opts.TracerProvider, opts.Propagator, cfg)
	return r, nil
}

// Run relays until ctx is done, then finishes the deliveries in flight (up to
// the drain timeout), confirms its position and returns nil. It returns an
// error only for problems retrying cannot fix (a *FatalError: not migrated,
// wal_level, bad credentials). Lost connections to PostgreSQL or a broker are
// retried.
func (r *Relay) Run(ctx context.Context) error {
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(500*time.Millisecond), backoff.WithMaxInterval(10*time.Second), backoff.WithMaxElapsedTime(0))
	for {
		s := &session{r: r, cfg: r.cfg, logger: r.logger}
		started := time.Now()
		err := s.run(ctx)
		r.active.Store(false)
		r.streaming.Store(false)
		r.metrics.sessionEnded()
		if ctx.Err() != nil {
			return nil
		}
		var fe *FatalError
		if errors.As(err, &fe) {
			r.logger.Error("relay stopped", "error", err)
			return err
		}
		r.setErr(err)
		if time.Since(started) > time.Minute {
			bo.Reset()
		}
		wait := bo.NextBackOff()
		r.logger.Warn("relay session ended; starting again", "error", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
	}
}

func (r *Relay) setErr(err error) {
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
}

// recovered forgets the error that ended an earlier session, once a new
// session works (it streams, or it is a standby polling the lock): Health
// reports what is wrong now, not what the relay has recovered from.
func (r *Relay) recovered() { r.setErr(nil) }

// Health is the relay's readiness, for /readyz.
type Health struct {
	Database  bool            `json:"database"`
	Active    bool            `json:"active"`
	Streaming bool            `json:"streaming"`
	Sinks     map[string]bool `json:"sinks"`
	// Error is the error that ended the last session, until a new session
	// streams (or polls the lock as a standby).
	Error string `json:"error,omitempty"`
}

// Health reports the relay's state. Sinks that implement
// Ping(context.Context) error are pinged.
func (r *Relay) Health(ctx context.Context) Health {
	h := Health{Database: r.dbOK.Load(), Active: r.active.Load(), Streaming: r.streaming.Load(), Sinks: map[string]bool{}}
	for name, s := range r.sinks {
		ok := true
		if p, isPinger := s.(interface{ Ping(context.Context) error }); isPinger {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ok = p.Ping(pctx) == nil
			cancel()
		}
		h.Sinks[name] = ok
	}
	r.mu.Lock()
	if r.lastErr != nil {
		h.Error = r.lastErr.Error()
	}
	r.mu.Unlock()
	return h
}
