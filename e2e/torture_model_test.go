package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file holds the torture test's knobs and its model of routing: what
// routes a run gets (drawn from the seed) and which of them an event takes,
// computed from docs/routing.md independently of the relay's router.

// tortureClasses are the names TORTURE_SKIP accepts, by group: each turns one
// edge class, route kind, sink or fault off (for diagnosis only; all are on by
// default).
var tortureClasses = map[string][]string{
	"rows":   {"sql", "sdk", "backlog", "infinity", "fartime", "nul", "badutf8", "empty", "large", "oddids", "headers", "ctypes", "rollback"},
	"routes": {"filter", "failsink", "fanout", "default", "drop", "odddest", "lowretry"},
	"sinks":  {"nats", "kafka", "redis", "rabbit", "stdout"},
	"faults": {"kill", "term", "slotdrop", "cut", "replay", "prune"},
}

// tortureOpts are the run's settings, from the environment.
type tortureOpts struct {
	seed uint64
	secs int  // how long writers and faults go on
	long bool // a long run (make torture): one 50 MB payload
	skip map[string]bool
}

func (o *tortureOpts) on(class string) bool { return !o.skip[class] }

func tortureOptions(t *testing.T) tortureOpts {
	t.Helper()
	o := tortureOpts{secs: 15, skip: map[string]bool{}}
	if v := os.Getenv("TORTURE_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 {
			t.Fatalf("TORTURE_SECONDS=%q: want a number of seconds, at least 5", v)
		}
		o.secs = n
	}
	o.long = o.secs >= 120
	if v := os.Getenv("TORTURE_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TORTURE_SEED=%q: want the decimal seed a run printed", v)
		}
		o.seed = n
	} else {
		o.seed = rand.Uint64() >> 1
	}
	var all []string
	for _, names := range tortureClasses {
		all = append(all, names...)
	}
	for _, s := range strings.Split(os.Getenv("TORTURE_SKIP"), ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(all, s) {
			sort.Strings(all)
			t.Fatalf("TORTURE_SKIP: unknown class %q (known: %s)", s, strings.Join(all, ", "))
		}
		o.skip[s] = true
	}
	if o.skip["sql"] && o.skip["sdk"] {
		t.Fatal("TORTURE_SKIP: skipping both sql and sdk leaves no writer")
	}
	if o.skip["nats"] && o.skip["kafka"] && o.skip["redis"] && o.skip["rabbit"] && o.skip["stdout"] {
		t.Fatal("TORTURE_SKIP: every sink skipped")
	}
	return o
}

// The event types the writers use, and the patterns routes match them with.
var (
	tortureTypes = []string{"order.created", "order.paid", "order.item.added", "user.signup", "user.gone", "audit.log", "misc", "blob.stored"}
	tortureGlobs = []string{"order.*", "order.item.*", "user.*", "*.created", "*", "[ab]*", "*.?o*"}
)

// tRoute is one generated route.
type tRoute struct {
	name     string
	sink     string // the sink's name in relay.yaml: nats, kafka, redis, rabbit, out
	kind     string // what the route is for, in the report
	match    string
	aggType  string
	filter   string // "", "n" (payload.n > 50) or "tier" (headers["tier"] == "gold")
	cont     bool
	lowRetry bool   // few attempts: a broker cut dead-letters, a replay delivers
	failing  bool   // its sink refuses every message (permanent error)
	oddDest  string // "", "id" (aggregate id in the subject), "slice" (a byte slice of it), "nul"
	dest     string // the destination template
	glob     bool
	order    int
}

// tWorld is a run's routes and names of broker objects.
type tWorld struct {
	routes     []*tRoute // in file order
	def        *tRoute   // the default route, nil when absent or drop
	defMode    string    // "route", "drop" or "absent"
	sinks      map[string]bool
	natsStream string
	natsPrefix string
	redisPref  string
	kafkaTopic map[string]string // route -> topic
	rabbitQ    map[string]string // route -> queue
	noExchange string
	aggTypes   []string
}

// genWorld draws the routes of a run. Every run has at least one route per
// enabled kind the brief asks for: an exact and a glob route, a filter that
// errors for some rows, a failing sink, a fan-out, and the default route
// present, dropping, or absent.
func genWorld(rng *rand.Rand, o *tortureOpts, suffix string) *tWorld {
	w := &tWorld{sinks: map[string]bool{}, kafkaTopic: map[string]string{}, rabbitQ: map[string]string{},
		natsStream: "TORTURE_" + strings.ToUpper(suffix), natsPrefix: "tort" + suffix, redisPref: "tort:" + suffix,
		noExchange: "torture-nox-" + suffix}
	var good []string // sinks that accept what they are given
	for _, s := range []struct{ class, sink string }{{"nats", "nats"}, {"kafka", "kafka"}, {"redis", "redis"}, {"rabbit", "rabbit"}, {"stdout", "out"}} {
		if o.on(s.class) {
			good = append(good, s.sink)
		}
	}
	pick := func(from []string) string { return from[rng.IntN(len(from))] }
	var cutOK []string // sinks whose path the test can cut
	for _, s := range good {
		if s != "out" {
			cutOK = append(cutOK, s)
		}
	}

	n := 5 + rng.IntN(4)
	var specs []*tRoute
	// The kinds every run must have, then random ones.
	specs = append(specs, &tRoute{kind: "exact", match: pick(tortureTypes[:7]), sink: pick(good)})
	specs = append(specs, &tRoute{kind: "glob", match: pick(tortureGlobs), sink: pick(good)})
	if o.on("filter") {
		specs = append(specs, &tRoute{kind: "filter", match: pick(tortureGlobs), filter: pick([]string{"n", "tier"}), sink: pick(good)})
	}
	if o.on("failsink") {
		var fs []string
		if o.on("nats") {
			fs = append(fs, "nats")
		}
		if o.on("rabbit") {
			fs = append(fs, "rabbit")
		}
		if len(fs) > 0 {
			specs = append(specs, &tRoute{kind: "failing sink", match: pick(tortureGlobs), sink: pick(fs), failing: true, cont: true})
		}
	}
	if o.on("fanout") && len(good) > 1 {
		m := pick(tortureTypes[:7])
		a := pick(good)
		b := pick(good)
		for b == a {
			b = pick(good)
		}
		specs = append(specs, &tRoute{kind: "fan-out", match: m, sink: a, cont: true}, &tRoute{kind: "fan-out", match: m, sink: b})
	}
	var lowRetry *tRoute
	if o.on("lowretry") && o.on("cut") && len(cutOK) > 0 {
		// An exact match with continue, first in the file: it takes every
		// event of its type, whatever else matches.
		// Not NATS when another will do: its client buffers what is
		// published while disconnected, so a short cut rarely fails a
		// message.
		from := cutOK
		if i := slices.Index(from, "nats"); i >= 0 && len(from) > 1 {
			from = slices.Delete(slices.Clone(from), i, i+1)
		}
		lowRetry = &tRoute{kind: "low retry", match: pick(tortureTypes[:7]), sink: pick(from), lowRetry: true, cont: true}
	}
	if o.on("odddest") {
		var od []string
		if o.on("nats") {
			od = append(od, "nats-id")
		}
		if o.on("rabbit") {
			od = append(od, "rabbit-slice", "rabbit-nul")
		}
		if len(od) > 0 {
			switch pick(od) {
			case "nats-id":
				specs = append(specs, &tRoute{kind: "odd destination", match: pick(tortureGlobs), sink: "nats", oddDest: "id", cont: true})
			case "rabbit-slice":
				specs = append(specs, &tRoute{kind: "odd destination", match: pick(tortureGlobs), sink: "rabbit", oddDest: "slice", cont: true, failing: true})
			case "rabbit-nul":
				specs = append(specs, &tRoute{kind: "odd destination", match: pick(tortureGlobs), sink: "rabbit", oddDest: "nul", cont: true, failing: true})
			}
		}
	}
	for len(specs) < n {
		r := &tRoute{kind: "random", sink: pick(good), cont: rng.IntN(3) == 0}
		if rng.IntN(2) == 0 {
			r.match = pick(tortureTypes)
		} else {
			r.match = pick(tortureGlobs)
		}
		if rng.IntN(6) == 0 {
			r.aggType = pick([]string{"order", "user", "gadget"})
		}
		if o.on("filter") && rng.IntN(6) == 0 {
			r.filter = pick([]string{"n", "tier"})
		}
		specs = append(specs, r)
	}
	// Shuffle, keeping a fan-out pair adjacent (continue applies to the
	// routes after it).
	var groups [][]*tRoute
	for i := 0; i < len(specs); i++ {
		if specs[i].kind == "fan-out" && i+1 < len(specs) && specs[i+1].kind == "fan-out" {
			groups = append(groups, specs[i:i+2])
			i++
			continue
		}
		groups = append(groups, specs[i:i+1])
	}
	rng.Shuffle(len(groups), func(i, j int) { groups[i], groups[j] = groups[j], groups[i] })
	if lowRetry != nil {
		groups = append([][]*tRoute{{lowRetry}}, groups...)
	}
	for _, g := range groups {
		w.routes = append(w.routes, g...)
	}
	for i, r := range w.routes {
		r.order = i
		r.name = fmt.Sprintf("r%d-%s", i, r.sink)
		r.glob = strings.ContainsAny(r.match, `*?[\`)
		w.dest(r)
	}

	var modes []string
	if o.on("default") {
		modes = append(modes, "route")
	}
	if o.on("drop") {
		modes = append(modes, "drop", "absent")
	}
	w.defMode = "absent"
	if len(modes) > 0 {
		w.defMode = pick(modes)
	}
	if w.defMode == "route" {
		w.def = &tRoute{name: "default", kind: "default", sink: pick(good)}
		w.dest(w.def)
	}
	for _, r := range w.all() {
		w.sinks[r.sink] = true
	}
	w.aggTypes = []string{"order", "user", "gadget"}
	if o.on("oddids") {
		w.aggTypes = append(w.aggTypes, "typ é", "ä.b c")
	}
	return w
}

// dest sets r's destination: one namespace per route, so that a consumer
// knows the route of each message it reads.
func (w *tWorld) dest(r *tRoute) {
	switch {
	case r.sink == "nats" && r.failing:
		r.dest = "nostream" + w.natsPrefix + "." + r.name + ".{{.EventType}}"
	case r.sink == "nats" && r.oddDest == "id":
		r.dest = w.natsPrefix + "." + r.name + ".{{.AggregateID}}"
	case r.sink == "nats":
		r.dest = w.natsPrefix + "." + r.name + ".{{.EventType}}"
	case r.sink == "kafka":
		w.kafkaTopic[r.name] = "torture-" + strings.TrimPrefix(w.natsPrefix, "tort") + "-" + r.name
		r.dest = w.kafkaTopic[r.name]
	case r.sink == "redis":
		r.dest = w.redisPref + ":" + r.name + ":{{.AggregateType}}"
	case r.sink == "rabbit" && r.oddDest == "slice":
		r.dest = w.noExchange + "-{{slice .AggregateID 0 1}}/k"
	case r.sink == "rabbit" && r.oddDest == "nul":
		r.dest = w.noExchange + `{{printf "%c" 0}}/k`
	case r.sink == "rabbit" && r.failing:
		r.dest = w.noExchange + "/k"
	case r.sink == "rabbit":
		w.rabbitQ[r.name] = "torture-" + strings.TrimPrefix(w.natsPrefix, "tort") + "-" + r.name
		r.dest = "/" + w.rabbitQ[r.name]
	case r.sink == "out":
		r.dest = r.name
	}
}

func (w *tWorld) all() []*tRoute {
	if w.def != nil {
		return append(slices.Clone(w.routes), w.def)
	}
	return w.routes
}

func (w *tWorld) route(name string) *tRoute {
	for _, r := range w.all() {
		if r.name == name {
			return r
		}
	}
	return nil
}

// describe lists the routes for the report.
func (w *tWorld) describe() string {
	var b strings.Builder
	for _, r := range w.all() {
		fmt.Fprintf(&b, "  %-12s %-16s match=%-16q", r.name, r.kind, r.match)
		if r.aggType != "" {
			fmt.Fprintf(&b, " aggregate_type=%s", r.aggType)
		}
		if r.filter != "" {
			fmt.Fprintf(&b, " filter=%s", tortureFilter(r.filter))
		}
		if r.cont {
			b.WriteString(" continue")
		}
		if r.lowRetry {
			b.WriteString(" retry=3")
		}
		fmt.Fprintf(&b, " -> %s %q\n", r.sink, r.dest)
	}
	fmt.Fprintf(&b, "  default route: %s\n", w.defMode)
	return b.String()
}

func tortureFilter(f string) string {
	switch f {
	case "n":
		return "payload.n > 50"
	case "tier":
		return `headers["tier"] == "gold"`
	}
	return ""
}

// config writes the relay.yaml of the run.
func (w *tWorld) config(dbURL, schema, slot, pub string, adminPort int, natsAddr, kafkaAddr, redisAddr, amqpURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "database: {url: '%s', schema: %s, slot: %s, publication: %s, standby_poll: 500ms}\n", dbURL, schema, slot, pub)
	fmt.Fprintf(&b, "admin: {listen: '127.0.0.1:%d'}\nsource: /torture\nsinks:\n", adminPort)
	if w.sinks["nats"] {
		fmt.Fprintf(&b, "  - {name: nats, type: nats, url: 'nats://%s', stream: %s, subjects: ['%s.>'], duplicate_window: 1s, publish_timeout: 3s}\n", natsAddr, w.natsStream, w.natsPrefix)
	}
	if w.sinks["kafka"] {
		fmt.Fprintf(&b, "  - {name: kafka, type: kafka, brokers: ['%s'], dial_timeout: 1s, write_timeout: 3s, max_attempts: 1}\n", kafkaAddr)
	}
	if w.sinks["redis"] {
		fmt.Fprintf(&b, "  - {name: redis, type: redis, url: 'redis://%s/0', dial_timeout: 1s, read_timeout: 3s, write_timeout: 3s}\n", redisAddr)
	}
	if w.sinks["rabbit"] {
		fmt.Fprintf(&b, "  - {name: rabbit, type: rabbitmq, url: '%s', confirm_timeout: 5s, dial_timeout: 1s}\n", amqpURL)
	}
	if w.sinks["out"] {
		b.WriteString("  - {name: out, type: stdout}\n")
	}
	retry := func(r *tRoute) string {
		if r.lowRetry {
			return "{max_attempts: 3, initial_interval: 50ms, max_interval: 200ms}"
		}
		return "{max_attempts: 1000000, initial_interval: 50ms, max_interval: 1s}"
	}
	b.WriteString("routes:\n")
	for _, r := range w.routes {
		fmt.Fprintf(&b, "  - name: %s\n    match: '%s'\n    sink: %s\n    destination: '%s'\n    continue: %v\n    retry: %s\n",
			r.name, r.match, r.sink, r.dest, r.cont, retry(r))
		if r.aggType != "" {
			fmt.Fprintf(&b, "    aggregate_type: '%s'\n", r.aggType)
		}
		if r.filter != "" {
			fmt.Fprintf(&b, "    filter: '%s'\n", tortureFilter(r.filter))
		}
	}
	switch w.defMode {
	case "route":
		fmt.Fprintf(&b, "default_route: {sink: %s, destination: '%s', retry: %s}\n", w.def.sink, w.def.dest, retry(w.def))
	case "drop":
		b.WriteString("default_route: {drop: true}\n")
	}
	return b.String()
}

// routesFor is the model of docs/routing.md: exact matches in file order,
// then globs (longer literal prefix first, then fewer '*', then file order),
// each taken if its aggregate type and filter allow; the first match stops
// the search unless it says continue; the default route only when nothing
// matched.
func (w *tWorld) routesFor(r *tRow) []string {
	var cands []*tRoute
	for _, rt := range w.routes {
		if !rt.glob && rt.match == r.eventType {
			cands = append(cands, rt)
		}
	}
	var globs []*tRoute
	for _, rt := range w.routes {
		if ok, _ := path.Match(rt.match, r.eventType); rt.glob && ok {
			globs = append(globs, rt)
		}
	}
	lit := func(g string) int {
		if i := strings.IndexAny(g, `*?[\`); i >= 0 {
			return i
		}
		return len(g)
	}
	slices.SortStableFunc(globs, func(a, b *tRoute) int {
		if pa, pb := lit(a.match), lit(b.match); pa != pb {
			return pb - pa
		}
		if wa, wb := strings.Count(a.match, "*"), strings.Count(b.match, "*"); wa != wb {
			return wa - wb
		}
		return a.order - b.order
	})
	cands = append(cands, globs...)
	var out []string
	for _, rt := range cands {
		if rt.aggType != "" && rt.aggType != r.aggType {
			continue
		}
		if rt.filter != "" && !r.passes(rt.filter) {
			continue
		}
		out = append(out, rt.name)
		if !rt.cont {
			break
		}
	}
	if len(out) == 0 && w.def != nil {
		out = append(out, w.def.name)
	}
	return out
}

// passes evaluates a filter the way CEL would over the decoded payload and
// headers: an evaluation error (no such field, a type mismatch, a payload
// that is not a JSON object) is no match.
func (r *tRow) passes(filter string) bool {
	switch filter {
	case "n":
		return r.passN
	case "tier":
		tier, ok := r.headers["tier"]
		return ok && tier == "gold"
	}
	return false
}

// tsKind is how a timestamp was written.
type tsKind int

const (
	tsNormal tsKind = iota
	tsNegInf
	tsYear1
	tsYear2300
	tsPosInf
)

func (k tsKind) String() string {
	return [...]string{"normal", "-infinity", "0001-01-01", "2300-01-01", "infinity"}[k]
}

// tsVal is a stored timestamp.
type tsVal struct {
	kind tsKind
	t    time.Time // when finite
}

func (v tsVal) infinite() bool { return v.kind == tsNegInf || v.kind == tsPosInf }
