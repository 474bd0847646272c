// Package handler is a relay sink that delivers events to Go functions in the
// same process: the relay as a library. A program registers handlers by event
// type, exact ("order.placed") or a glob ("order.*", matched like routes),
// passes the Sink to relay.New, and gets the relay's guarantees for its own
// code: events of one ordering key arrive one at a time in commit order, a
// failing handler is retried with the route's backoff, and a permanent
// failure (or exhausted retries) lands in the dead-letter table.
//
//	h, _ := handler.New(nil)
//	h.Handle("order.*", func(ctx context.Context, m *sink.Message) error {
//		return ship(ctx, m.Event.AggregateID, m.Event.Payload)
//	})
//	cfg, _ := relay.NewConfig(relay.Config{
//		Database: relay.DatabaseConfig{URL: dsn},
//		Routes:   []relay.RouteConfig{{Name: "app", Match: "*", Sink: "app"}},
//	})
//	r, _ := relay.New(cfg, map[string]sink.Sink{"app": h}, nil)
//	err := r.Run(ctx)
//
// Two kinds of handlers:
//
//   - Func (Handle) handles one message and returns its outcome.
//   - AsyncFunc (HandleAsync) starts handling one message and reports the
//     outcome later by calling done, from any goroutine: for work that
//     completes through a callback (a client library's async API, a batching
//     writer).
//
// An outcome is nil (handled: the event is marked delivered once every route
// has handled it), an error (retried by the relay, up to the route's
// retry.max_attempts, then dead-lettered), or an error wrapped with
// sink.MarkPermanent (dead-lettered at once, without retries). An event whose
// type has no handler is a permanent error (ErrNoHandler): route only the
// types the program handles to this sink, or register a "*" handler.
//
// Delivery is at least once: after a crash of the process between a
// handler's success and the relay marking the row, the event is handled
// again. Make handlers idempotent (sdk/inbox does it for database work).
package handler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outboxrelay/outbox/internal/didyoumean"
	"github.com/outboxrelay/outbox/internal/inflight"
	"github.com/outboxrelay/outbox/relay/sink"
)

// Func handles one message synchronously and returns its outcome. ctx is
// cancelled when Config.Timeout passes or the relay stops. m belongs to the
// relay: read it, do not modify it or keep it after returning.
type Func func(ctx context.Context, m *sink.Message) error

// AsyncFunc starts handling one message and reports the outcome by calling
// done exactly once, now or later, from any goroutine. Calls after the first
// are ignored, and so is a call after Config.Timeout (the message has then
// failed with ErrTimeout and will be retried). ctx stays valid until done is
// called or the timeout passes. m belongs to the relay: do not modify it, and
// do not read it after calling done.
type AsyncFunc func(ctx context.Context, m *sink.Message, done func(error))

// Config configures a Sink. A nil *Config means all defaults.
type Config struct {
	// Concurrency is how many handler calls may run at once, across all the
	// batches the relay has in flight. Defaults to 1: handlers are never
	// called concurrently, so they need no locking of their own. Whatever the
	// value, two events with the same ordering key are never handled at
	// once, and they are handled in commit order.
	Concurrency int
	// Timeout bounds the handling of one message: the handler's ctx ends
	// then, and an async handler that has not called done by then fails with
	// ErrTimeout (retried). Defaults to 1m.
	Timeout time.Duration
	// Logger receives handler panics (with their stack) and late or repeated
	// done calls. Defaults to slog.Default().
	Logger *slog.Logger
}

// Errors of a Sink.
var (
	// ErrNoHandler: no handler is registered for the message's event type.
	// Publish reports it as a permanent error.
	ErrNoHandler = errors.New("no handler")
	// ErrTimeout: an async handler did not call done within Config.Timeout.
	ErrTimeout = errors.New("handler did not report within the timeout")
	// ErrClosed: Publish was called after Close.
	ErrClosed = errors.New("handler: sink closed")
)

// PanicError is the outcome of a handler that panicked. It is retried like
// any error, so a panic caused by a passing condition can heal and one that
// keeps happening ends in the dead-letter table after the route's attempts.
type PanicError struct {
	// Value is what the handler panicked with.
	Value any
	// Stack is the handler goroutine's stack at the panic.
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler: panic: %v", e.Value) }

// Unwrap returns Value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

type entry struct {
	pattern string
	fn      Func
	async   AsyncFunc
	glob    bool
	order   int
}

// Sink delivers messages to registered handlers. It is safe for concurrent
// use; handlers may be registered while the relay runs.
type Sink struct {
	timeout time.Duration
	logger  *slog.Logger
	sem     chan struct{}

	mu    sync.RWMutex
	exact map[string]*entry
	globs []*entry // most specific first

	calls   inflight.Gate  // Publish calls in progress; closed by Close
	running sync.WaitGroup // handler goroutines, started by Publish calls
}

var _ sink.Sink = (*Sink)(nil)

// New returns a Sink with no handlers, or an error naming the invalid Config
// field.
func New(cfg *Config) (*Sink, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Concurrency < 0 {
		return nil, fmt.Errorf("handler: config: Concurrency is %d, must be positive (0 means the default, 1)", c.Concurrency)
	}
	if c.Timeout < 0 {
		return nil, fmt.Errorf("handler: config: Timeout is %s, must be positive (0 means the default, 1m)", c.Timeout)
	}
	c.Concurrency = cmp.Or(c.Concurrency, 1)
	c.Timeout = cmp.Or(c.Timeout, time.Minute)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return &Sink{
		timeout: c.Timeout,
		logger:  c.Logger,
		sem:     make(chan struct{}, c.Concurrency),
		exact:   map[string]*entry{},
	}, nil
}

// Handle registers fn for the event types matching pattern: an exact event
// type, or a glob in the syntax of path.Match ("order.*", "*"). An exact
// pattern wins over globs; among globs the most specific wins (the longest
// text before the first wildcard, then the fewest "*", then the first
// registered), as in the relay's routing. It is an error to register a
// pattern twice or a malformed glob.
func (s *Sink) Handle(pattern string, fn Func) error {
	if fn == nil {
		return fmt.Errorf("handler: Handle(%q): the handler is nil", pattern)
	}
	return s.register(&entry{pattern: pattern, fn: fn})
}

// HandleAsync registers an asynchronous handler for pattern, as Handle does.
func (s *Sink) HandleAsync(pattern string, fn AsyncFunc) error {
	if fn == nil {
		return fmt.Errorf("handler: HandleAsync(%q): the handler is nil", pattern)
	}
	return s.register(&entry{pattern: pattern, async: fn})
}

func (s *Sink) register(e *entry) error {
	if e.pattern == "" {
		return errors.New("handler: empty pattern: give an event type such as \"order.placed\" or a glob such as \"order.*\"")
	}
	if _, err := path.Match(e.pattern, ""); err != nil {
		return fmt.Errorf("handler: bad pattern %q: %v (globs use path.Match syntax: *, ?, [a-z], \\ to escape)", e.pattern, err)
	}
	e.glob = strings.ContainsAny(e.pattern, `*?[\`)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exact[e.pattern] != nil || slices.ContainsFunc(s.globs, func(g *entry) bool { return g.pattern == e.pattern }) {
		return fmt.Errorf("handler: pattern %q is already registered", e.pattern)
	}
	e.order = len(s.exact) + len(s.globs)
	if !e.glob {
		s.exact[e.pattern] = e
		return nil
	}
	s.globs = append(s.globs, e)
	slices.SortStableFunc(s.globs, func(a, b *entry) int {
		pa, pb := literalPrefix(a.pattern), literalPrefix(b.pattern)
		if pa != pb {
			return pb - pa
		}
		if wa, wb := strings.Count(a.pattern, "*"), strings.Count(b.pattern, "*"); wa != wb {
			return wa - wb
		}
		return a.order - b.order
	})
	return nil
}

func literalPrefix(glob string) int {
	if i := strings.IndexAny(glob, `*?[\`); i >= 0 {
		return i
	}
	return len(glob)
}

// lookup returns the handler of eventType, or a permanent error wrapping
// ErrNoHandler.
func (s *Sink) lookup(eventType string) (*entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if e := s.exact[eventType]; e != nil {
		return e, nil
	}
	for _, g := range s.globs {
		if ok, _ := path.Match(g.pattern, eventType); ok {
			return g, nil
		}
	}
	patterns := make([]string, 0, len(s.exact)+len(s.globs))
	for p := range s.exact {
		patterns = append(patterns, p)
	}
	for _, g := range s.globs {
		patterns = append(patterns, g.pattern)
	}
	slices.Sort(patterns)
	hint := " (no handlers are registered)"
	if len(patterns) > 0 {
		hint = " (registered: " + strings.Join(patterns, ", ") + ")"
		if sg := didyoumean.Suggest(eventType, patterns); sg != "" {
			hint = fmt.Sprintf(" (did you mean %q? registered: %s)", sg, strings.Join(patterns, ", "))
		}
	}
	return nil, sink.MarkPermanent(fmt.Errorf("handler: %w for event type %q%s", ErrNoHandler, eventType, hint))
}

// outcomes collects the results of one Publish call. The first report for a
// message wins; reports after Publish returned are dropped.
type outcomes struct {
	mu        sync.Mutex
	errs      []error
	reported  []bool
	remaining int
	all       chan struct{} // closed when every message has its outcome
	returned  bool
	failed    bool
}

func newOutcomes(n int) *outcomes {
	o := &outcomes{errs: make([]error, n), reported: make([]bool, n), remaining: n, all: make(chan struct{})}
	if n == 0 {
		close(o.all)
	}
	return o
}

// report records message i's outcome and says whether it was the first.
func (o *outcomes) report(i int, err error) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.reported[i] || o.returned {
		return false
	}
	o.reported[i] = true
	o.errs[i] = err
	if err != nil {
		o.failed = true
	}
	o.remaining--
	if o.remaining == 0 {
		close(o.all)
	}
	return true
}

// result ends the call: messages without an outcome fail with err.
func (o *outcomes) result(err error) []error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.returned = true
	for i, done := range o.reported {
		if !done {
			o.errs[i] = err
			o.failed = true
		}
	}
	if !o.failed {
		return nil
	}
	return o.errs
}

// Publish hands each message to the handler of its event type and waits
// for every outcome (or for ctx to end: the messages still being handled then
// fail with ctx's error and are delivered again by the relay).
func (s *Sink) Publish(ctx context.Context, msgs []*sink.Message) []error {
	if !s.calls.Enter() {
		return sink.AllFailed(len(msgs), ErrClosed)
	}
	defer s.calls.Leave()

	out := newOutcomes(len(msgs))
dispatch:
	for i, m := range msgs {
		e, err := s.lookup(m.Event.EventType)
		if err != nil {
			out.report(i, err)
			continue
		}
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			break dispatch
		}
		if e.async != nil {
			s.callAsync(ctx, e, m, func(err error) bool { return out.report(i, err) })
			<-s.sem
			continue
		}
		s.running.Add(1)
		go func() {
			defer s.running.Done()
			defer func() { <-s.sem }()
			out.report(i, s.callSync(ctx, e, m))
		}()
	}
	select {
	case <-out.all:
		return out.result(nil)
	case <-ctx.Done():
		return out.result(fmt.Errorf("handler: %w", context.Cause(ctx)))
	}
}

func (s *Sink) callSync(ctx context.Context, e *entry, m *sink.Message) (err error) {
	hctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	defer s.recover(e, m, &err)
	return e.fn(hctx, m)
}

// callAsync starts an async handler. report records the outcome and says
// whether it was the first.
func (s *Sink) callAsync(ctx context.Context, e *entry, m *sink.Message, report func(error) bool) {
	hctx, cancel := context.WithTimeoutCause(ctx, s.timeout, ErrTimeout)
	id, eventType := m.Event.ID.String(), m.Event.EventType
	stop := context.AfterFunc(hctx, func() {
		if context.Cause(hctx) == ErrTimeout {
			report(fmt.Errorf("handler: %q: %w (%s)", e.pattern, ErrTimeout, s.timeout))
		}
		// Otherwise the relay is stopping: Publish fails what is left.
	})
	var calls atomic.Int32
	finish := func(err error) {
		if !report(err) {
			s.logger.Debug("handler: outcome arrived after the timeout or after the relay stopped waiting; ignored (the message is retried)",
				"event_id", id, "event_type", eventType, "pattern", e.pattern, "error", err)
		}
		stop()
		cancel()
	}
	done := func(err error) {
		if calls.Add(1) > 1 {
			s.logger.Warn("handler: done called more than once; ignored", "event_id", id, "event_type", eventType, "pattern", e.pattern, "error", err)
			return
		}
		finish(err)
	}
	var perr error
	func() {
		defer s.recover(e, m, &perr)
		e.async(hctx, m, done)
	}()
	if perr != nil && calls.Add(1) == 1 {
		finish(perr)
	}
}

// recover turns a handler panic into a *PanicError in *err.
func (s *Sink) recover(e *entry, m *sink.Message, err *error) {
	if v := recover(); v != nil {
		pe := &PanicError{Value: v, Stack: debug.Stack()}
		s.logger.Error("handler panicked", "event_id", m.Event.ID.String(), "event_type", m.Event.EventType,
			"pattern", e.pattern, "attempt", m.Attempt, "panic", fmt.Sprint(v), "stack", string(pe.Stack))
		*err = pe
	}
}

// Close refuses further messages and waits for the handler calls still
// running (synchronous handlers, whose ctx the relay has cancelled, and calls
// of async handlers; not the work an async handler left running).
func (s *Sink) Close() error {
	if !s.calls.Close() {
		return nil
	}
	// Handler goroutines start only within Publish calls, which have all
	// returned: none starts after this.
	s.running.Wait()
	return nil
}
