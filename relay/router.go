package relay

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// route is one compiled routing rule.
type route struct {
	Name          string
	Sink          string
	Match         string
	AggregateType string
	Continue      bool
	Retry         RetryConfig
	Destination   *Destination
	filter        *filter
	glob          bool
	order         int
	filterErrs    filterErrors
}

// filterErrors counts one route's filter evaluation errors between log lines.
type filterErrors struct {
	mu     sync.Mutex
	logged time.Time // when the last line was written
	count  int       // errors since then
}

// filterErrorLogEvery is the least time between two log lines about one
// route's filter errors.
const filterErrorLogEvery = time.Minute

// router picks the routes of an event: exact event-type matches first, then
// globs (more specific first), then the default route. The first match wins
// unless it says continue, in which case later matches are added too (fan-out).
type router struct {
	exact  map[string][]*route
	globs  []*route
	def    *route // nil when unmatched events are dropped
	mu     sync.RWMutex
	byType map[string][]*route // candidates per event type, cached
	routes []*route

	// Filter evaluation errors are counted in metrics and logged to logger
	// (when set), at most once per logEvery per route.
	metrics  *metrics
	logger   *slog.Logger
	logEvery time.Duration
	now      func() time.Time
}

// defaultRouteName is the route name of the default route.
const defaultRouteName = "default"

// newRouter compiles the routes of cfg. cfg must have passed Validate.
func newRouter(cfg *Config) (*router, error) {
	r := &router{exact: map[string][]*route{}, byType: map[string][]*route{}, logEvery: filterErrorLogEvery, now: time.Now}
	for i, rc := range cfg.Routes {
		dest, err := ParseDestination(rc.Destination)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", rc.Name, err)
		}
		rt := &route{Name: rc.Name, Sink: rc.Sink, Match: rc.Match, AggregateType: rc.AggregateType,
			Continue: rc.Continue, Retry: rc.Retry, Destination: dest, order: i,
			glob: strings.ContainsAny(rc.Match, `*?[\`)}
		if rc.Filter != "" {
			if rt.filter, err = compileFilter(rc.Filter); err != nil {
				return nil, fmt.Errorf("route %q: %w", rc.Name, err)
			}
		}
		r.routes = append(r.routes, rt)
		if rt.glob {
			r.globs = append(r.globs, rt)
		} else {
			r.exact[rt.Match] = append(r.exact[rt.Match], rt)
		}
	}
	// More specific globs first: a longer literal prefix, then fewer wildcards,
	// then config order.
	slices.SortStableFunc(r.globs, func(a, b *route) int {
		pa, pb := literalPrefix(a.Match), literalPrefix(b.Match)
		if pa != pb {
			return pb - pa
		}
		wa, wb := strings.Count(a.Match, "*"), strings.Count(b.Match, "*")
		if wa != wb {
			return wa - wb
		}
		return a.order - b.order
	})
	if d := cfg.DefaultRoute; d != nil && !d.Drop {
		dest, err := ParseDestination(d.Destination)
		if err != nil {
			return nil, fmt.Errorf("default_route: %w", err)
		}
		r.def = &route{Name: defaultRouteName, Sink: d.Sink, Destination: dest, Retry: d.Retry}
		r.routes = append(r.routes, r.def)
	}
	return r, nil
}

// observe makes the router count filter evaluation errors in m and log them
// to logger.
func (r *router) observe(m *metrics, logger *slog.Logger) {
	r.metrics, r.logger = m, logger
	for _, rt := range r.routes {
		if rt.filter != nil {
			m.filterRoute(rt)
		}
	}
}

// filterFailed records that rt's filter failed to evaluate for ev: the route
// does not take the event. The log line, at most one per route per logEvery,
// gives the errors since the previous line and the last one.
func (r *router) filterFailed(rt *route, ev *Event, err error) {
	r.metrics.filterError(rt)
	if r.logger == nil {
		return
	}
	fe := &rt.filterErrs
	now := r.now()
	fe.mu.Lock()
	fe.count++
	if !fe.logged.IsZero() && now.Sub(fe.logged) < r.logEvery {
		fe.mu.Unlock()
		return
	}
	n := fe.count
	fe.count, fe.logged = 0, now
	fe.mu.Unlock()
	r.logger.Warn("route filter failed to evaluate; the route does not take the event (fix the filter, e.g. guard a field with has(payload.x); logged at most once a minute per route)",
		"route", rt.Name, "filter", rt.filter.src, "errors_since_last_line", n, "error", err.Error(),
		"event_id", ev.ID.String(), "event_type", ev.EventType)
}

func literalPrefix(glob string) int {
	if i := strings.IndexAny(glob, `*?[\`); i >= 0 {
		return i
	}
	return len(glob)
}

func (r *router) candidates(eventType string) []*route {
	r.mu.RLock()
	c, ok := r.byType[eventType]
	r.mu.RUnlock()
	if ok {
		return c
	}
	c = slices.Clone(r.exact[eventType])
	for _, g := range r.globs {
		if ok, _ := path.Match(g.Match, eventType); ok {
			c = append(c, g)
		}
	}
	r.mu.Lock()
	if len(r.byType) > 10000 { // bound the cache against unbounded event types
		clear(r.byType)
	}
	r.byType[eventType] = c
	r.mu.Unlock()
	return c
}

// match appends the routes of ev to dst and returns it. An empty result means
// the event is dropped as unrouted: no route took it and there is no default
// route, or default_route: {drop: true}. A filter that fails to evaluate
// counts as no match (and is counted and logged).
func (r *router) match(dst []*route, ev *Event) []*route {
	var payload any
	decoded := false
	for _, rt := range r.candidates(ev.EventType) {
		if rt.AggregateType != "" && rt.AggregateType != ev.AggregateType {
			continue
		}
		if rt.filter != nil {
			if !decoded {
				payload, decoded = decodePayload(ev), true
			}
			ok, err := rt.filter.eval(ev, payload)
			if err != nil {
				r.filterFailed(rt, ev, err)
			}
			if !ok {
				continue
			}
		}
		dst = append(dst, rt)
		if !rt.Continue {
			return dst
		}
	}
	if len(dst) == 0 && r.def != nil {
		dst = append(dst, r.def)
	}
	return dst
}

func decodePayload(ev *Event) any {
	var v any
	if json.Unmarshal(ev.Payload, &v) != nil {
		return nil
	}
	return v
}

func validGlob(p string) error {
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("bad glob %q: %v (use * and ? wildcards, [a-z] classes)", p, err)
	}
	return nil
}
