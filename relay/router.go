package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"text/template"
	"text/template/parse"
	"time"

	"cel.dev/cel-go/cel"

	"github.com/outboxrelay/outbox/relay/sink"
)

// Route is one compiled routing rule.
type Route struct {
	Name          string
	Sink          string
	Match         string
	AggregateType string
	Continue      bool
	Retry         RetryConfig
	Destination   *Destination
	filter        *Filter
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

// Router picks the routes of an event: exact event-type matches first, then
// globs (more specific first), then the default route. The first match wins
// unless it says continue, in which case later matches are added too (fan-out).
type Router struct {
	exact  map[string][]*Route
	globs  []*Route
	def    *Route // nil when unmatched events are dropped
	mu     sync.RWMutex
	byType map[string][]*Route // candidates per event type, cached
	routes []*Route

	// Filter evaluation errors are counted in metrics and logged to logger
	// (when set), at most once per logEvery per route.
	metrics  *Metrics
	logger   *slog.Logger
	logEvery time.Duration
	now      func() time.Time
}

// DefaultRouteName is the route name of the default route.
const DefaultRouteName = "default"

// NewRouter compiles the routes of cfg. cfg must have passed Validate.
func NewRouter(cfg *Config) (*Router, error) {
	r := &Router{exact: map[string][]*Route{}, byType: map[string][]*Route{}, logEvery: filterErrorLogEvery, now: time.Now}
	for i, rc := range cfg.Routes {
		dest, err := ParseDestination(rc.Destination)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", rc.Name, err)
		}
		rt := &Route{Name: rc.Name, Sink: rc.Sink, Match: rc.Match, AggregateType: rc.AggregateType,
			Continue: rc.Continue, Retry: rc.Retry, Destination: dest, order: i,
			glob: strings.ContainsAny(rc.Match, `*?[\`)}
		if rc.Filter != "" {
			if rt.filter, err = CompileFilter(rc.Filter); err != nil {
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
	slices.SortStableFunc(r.globs, func(a, b *Route) int {
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
		r.def = &Route{Name: DefaultRouteName, Sink: d.Sink, Destination: dest, Retry: d.Retry}
		r.routes = append(r.routes, r.def)
	}
	return r, nil
}

// Routes lists every route, the default route last.
func (r *Router) Routes() []*Route { return r.routes }

// observe makes the router count filter evaluation errors in m and log them
// to logger.
func (r *Router) observe(m *Metrics, logger *slog.Logger) {
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
func (r *Router) filterFailed(rt *Route, ev *Event, err error) {
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

func (r *Router) candidates(eventType string) []*Route {
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

// Match appends the routes of ev to dst and returns it. An empty result means
// the event is dropped as unrouted: no route took it and there is no default
// route, or default_route: {drop: true}. A filter that fails to evaluate
// counts as no match (and is counted and logged).
func (r *Router) Match(dst []*Route, ev *Event) []*Route {
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
			ok, err := rt.filter.Eval(ev, payload)
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

// Destination is a compiled destination template.
type Destination struct {
	src   string
	parts []destPart // fast path: literal text and field references
	tmpl  *template.Template
}

type destPart struct {
	lit   string
	field func(*Event) string
}

var destFields = map[string]func(*Event) string{
	"EventType":     func(e *Event) string { return e.EventType },
	"AggregateType": func(e *Event) string { return e.AggregateType },
	"AggregateID":   func(e *Event) string { return e.AggregateID },
	"TenantID":      func(e *Event) string { return e.TenantID },
	"SchemaVersion": func(e *Event) string { return e.SchemaVersion },
	"ContentType":   func(e *Event) string { return e.ContentType },
	"ID":            func(e *Event) string { return e.ID.String() },
}

func destFieldNames() []string {
	names := make([]string, 0, len(destFields))
	for k := range destFields {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// templateEvent is what a destination template sees.
type templateEvent struct {
	ID, EventType, AggregateType, AggregateID, TenantID, SchemaVersion, ContentType string
	Headers                                                                         map[string]string
}

// ParseDestination compiles a destination template such as
// "orders.{{.EventType}}". Templates that only reference envelope fields take a
// fast path; others run through text/template.
func ParseDestination(src string) (*Destination, error) {
	t, err := template.New("destination").Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("bad destination template %q: %v", src, strings.TrimPrefix(err.Error(), "template: destination:"))
	}
	d := &Destination{src: src, tmpl: t}
	// Check field references now, so a typo fails at start-up, not per event.
	if err := checkTemplateFields(t.Tree.Root); err != nil {
		return nil, fmt.Errorf("bad destination template %q: %v", src, err)
	}
	if parts, ok := fastParts(t.Tree.Root); ok {
		d.parts = parts
	}
	sample := &Event{EventType: "x", AggregateType: "x", AggregateID: "x", TenantID: "x", SchemaVersion: "1.0", ContentType: "x", Headers: map[string]string{}}
	if _, err := d.Render(sample); err != nil && !strings.Contains(err.Error(), "rendered empty") {
		return nil, fmt.Errorf("bad destination template %q: %v", src, err)
	}
	return d, nil
}

func checkTemplateFields(n parse.Node) error {
	var err error
	var walk func(parse.Node)
	walk = func(n parse.Node) {
		if n == nil || err != nil {
			return
		}
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.FieldNode:
			name := n.Ident[0]
			if _, ok := destFields[name]; !ok && name != "Headers" {
				msg := fmt.Sprintf("unknown field .%s", name)
				if s := Suggest(name, append(destFieldNames(), "Headers")); s != "" {
					msg += fmt.Sprintf(" (did you mean .%s?)", s)
				} else {
					msg += fmt.Sprintf(" (fields: %s, Headers)", strings.Join(destFieldNames(), ", "))
				}
				err = errors.New(msg)
			}
		case *parse.IfNode:
			walkBranch(walk, &n.BranchNode)
		case *parse.RangeNode:
			walkBranch(walk, &n.BranchNode)
		case *parse.WithNode:
			walkBranch(walk, &n.BranchNode)
		}
	}
	walk(n)
	return err
}

func walkBranch(walk func(parse.Node), b *parse.BranchNode) {
	walk(b.Pipe)
	if b.List != nil {
		walk(b.List)
	}
	if b.ElseList != nil {
		walk(b.ElseList)
	}
}

func fastParts(root *parse.ListNode) ([]destPart, bool) {
	var parts []destPart
	for _, n := range root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			parts = append(parts, destPart{lit: string(n.Text)})
		case *parse.ActionNode:
			if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 {
				return nil, false
			}
			f, ok := n.Pipe.Cmds[0].Args[0].(*parse.FieldNode)
			if !ok || len(f.Ident) != 1 {
				return nil, false
			}
			fn, ok := destFields[f.Ident[0]]
			if !ok {
				return nil, false
			}
			parts = append(parts, destPart{field: fn})
		default:
			return nil, false
		}
	}
	return parts, true
}

// Render returns the destination of ev. An empty result is an error: a
// message with no destination is permanently undeliverable.
func (d *Destination) Render(ev *Event) (string, error) {
	var s string
	if d.parts != nil {
		if len(d.parts) == 1 && d.parts[0].field == nil {
			s = d.parts[0].lit
		} else {
			var b strings.Builder
			for _, p := range d.parts {
				if p.field != nil {
					b.WriteString(p.field(ev))
				} else {
					b.WriteString(p.lit)
				}
			}
			s = b.String()
		}
	} else {
		var b bytes.Buffer
		err := d.tmpl.Execute(&b, templateEvent{ID: ev.ID.String(), EventType: ev.EventType, AggregateType: ev.AggregateType,
			AggregateID: ev.AggregateID, TenantID: ev.TenantID, SchemaVersion: ev.SchemaVersion, ContentType: ev.ContentType, Headers: ev.Headers})
		if err != nil {
			return "", sink.Permanentf("destination %q: %v", d.src, err)
		}
		s = b.String()
	}
	if s == "" {
		return "", sink.Permanentf("destination %q rendered empty for event %s", d.src, ev.ID)
	}
	return s, nil
}

// LiteralPrefix returns the text before the template's first action, and
// whether the template is nothing but that text.
func (d *Destination) LiteralPrefix() (prefix string, literal bool) {
	if i := strings.Index(d.src, "{{"); i >= 0 {
		return d.src[:i], false
	}
	return d.src, true
}

// String returns the template source.
func (d *Destination) String() string { return d.src }

// Filter is a compiled CEL filter. The expression sees event_type,
// aggregate_type, aggregate_id, tenant_id, schema_version, content_type,
// headers (map of strings) and payload (the JSON payload decoded; null when it
// is not JSON).
type Filter struct {
	src string
	prg cel.Program
}

var (
	celEnvOnce sync.Once
	celEnv     *cel.Env
	celEnvErr  error
)

func filterEnv() (*cel.Env, error) {
	celEnvOnce.Do(func() {
		celEnv, celEnvErr = cel.NewEnv(
			cel.Variable("event_type", cel.StringType),
			cel.Variable("aggregate_type", cel.StringType),
			cel.Variable("aggregate_id", cel.StringType),
			cel.Variable("tenant_id", cel.StringType),
			cel.Variable("schema_version", cel.StringType),
			cel.Variable("content_type", cel.StringType),
			cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
			cel.Variable("payload", cel.DynType),
			cel.CrossTypeNumericComparisons(true),
		)
	})
	return celEnv, celEnvErr
}

// CompileFilter compiles a CEL filter expression that must yield a bool.
func CompileFilter(src string) (*Filter, error) {
	env, err := filterEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("bad CEL filter %q: %v", src, strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("bad CEL filter %q: it yields %s, want bool", src, ast.OutputType())
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("bad CEL filter %q: %v", src, err)
	}
	return &Filter{src: src, prg: prg}, nil
}

// Eval reports whether ev passes the filter. An evaluation error (a missing
// payload field, a type mismatch, a result that is not a bool) is returned
// with false: the caller counts it as no match.
func (f *Filter) Eval(ev *Event, payload any) (bool, error) {
	headers := ev.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	out, _, err := f.prg.Eval(map[string]any{
		"event_type":     ev.EventType,
		"aggregate_type": ev.AggregateType,
		"aggregate_id":   ev.AggregateID,
		"tenant_id":      ev.TenantID,
		"schema_version": ev.SchemaVersion,
		"content_type":   ev.ContentType,
		"headers":        headers,
		"payload":        payload,
	})
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("the filter yielded %v (%s), want a bool", out.Value(), out.Type().TypeName())
	}
	return b, nil
}
