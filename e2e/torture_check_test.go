package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/sdk/pgtime"
)

// This file holds the torture test's invariants, checked at the end against
// the events table, the dead-letter table and what the consumers read.

// tInv is one invariant's outcome.
type tInv struct {
	name    string
	checked int
	count   int      // violations
	viol    []string // the first ones
	info    string
}

func (v *tInv) fail(format string, args ...any) {
	v.count++
	if len(v.viol) < 12 {
		v.viol = append(v.viol, clip(fmt.Sprintf(format, args...), 600))
	}
}

// tDL is one dead letter.
type tDL struct {
	status, requestedAt, lastError, sink, destination string
	attempts                                          int
}

// tState is what the database holds at the end.
type tState struct {
	marked  map[string]bool // id -> delivered_at set, for rows in the table
	dls     map[string]map[string]*tDL
	dlCount int
}

func readState(ctx context.Context, pool *pgxpool.Pool, schema string) (*tState, error) {
	st := &tState{marked: map[string]bool{}, dls: map[string]map[string]*tDL{}}
	rows, err := pool.Query(ctx, "SELECT id::text, delivered_at IS NOT NULL FROM "+schema+".events")
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id string
		var m bool
		if err := rows.Scan(&id, &m); err != nil {
			rows.Close()
			return nil, err
		}
		st.marked[id] = m
	}
	rows.Close()
	if rows.Err() != nil {
		return nil, rows.Err()
	}
	rows, err = pool.Query(ctx, `SELECT event_id::text, route, sink, destination, replay_status, coalesce(replay_requested_at::text, ''), last_error, attempts
		FROM `+schema+".dead_letters")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, route string
		d := &tDL{}
		if err := rows.Scan(&id, &route, &d.sink, &d.destination, &d.status, &d.requestedAt, &d.lastError, &d.attempts); err != nil {
			return nil, err
		}
		if st.dls[id] == nil {
			st.dls[id] = map[string]*tDL{}
		}
		st.dls[id][route] = d
		st.dlCount++
	}
	return st, rows.Err()
}

// tChecks evaluates the invariants.
type tChecks struct {
	led    *tLedger
	world  *tWorld
	msgs   map[string][]tMsg // per route, in broker order
	st     *tState
	prunes int
}

func (c *tChecks) row(id string) *tRow { return c.led.rows[id] }

func describeRow(r *tRow) string {
	return fmt.Sprintf("row %s key %q seq %d type %s via %s [%s]", r.id, clip(r.key, 40), r.seq, r.eventType, r.path, strings.Join(r.tags, ","))
}

// clip shortens s to at most n bytes, on a rune boundary, saying how long
// it was.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:i], len(s))
}

// delivered is route -> id -> true.
func (c *tChecks) delivered() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for route, ms := range c.msgs {
		out[route] = map[string]bool{}
		for _, m := range ms {
			out[route][m.id] = true
		}
	}
	return out
}

func (c *tChecks) committedIDs() []string {
	ids := make([]string, 0, len(c.led.rows))
	for id := range c.led.rows {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// everyRowHandled: every committed row reached each route that takes it, or
// is dead-lettered for it.
func (c *tChecks) everyRowHandled() *tInv {
	v := &tInv{name: "every committed row is delivered to each route that takes it, or dead-lettered for it"}
	del := c.delivered()
	for _, id := range c.committedIDs() {
		r := c.row(id)
		for _, route := range r.routes {
			v.checked++
			if del[route][id] || c.st.dls[id][route] != nil {
				continue
			}
			marked, inTable := c.st.marked[id]
			v.fail("%s: route %s: neither delivered nor dead-lettered (in table %v, marked %v)", describeRow(r), route, inTable, marked)
		}
	}
	return v
}

// routingMatches: nothing arrives that should not: no rolled-back row, no
// unknown id, no route the model says does not take the row.
func (c *tChecks) routingMatches() *tInv {
	v := &tInv{name: "nothing arrives that should not (rolled-back rows, routes that do not take the row, unreadable messages)"}
	for route, ms := range c.msgs {
		for _, m := range ms {
			v.checked++
			if m.problem != "" {
				v.fail("%s: %s", route, m.problem)
				continue
			}
			r := c.row(m.id)
			switch {
			case c.led.rolledBack[m.id]:
				v.fail("route %s (%s): event %s of a rolled-back transaction arrived", route, m.sink, m.id)
			case r == nil && c.led.ambiguous[m.id]:
			case r == nil:
				v.fail("route %s (%s): event %q arrived that no writer committed", route, m.sink, m.id)
			case !slices.Contains(r.routes, route):
				v.fail("%s: arrived on route %s, but per docs/routing.md it takes %v", describeRow(r), route, r.routes)
			}
		}
	}
	for id, byRoute := range c.st.dls {
		for route := range byRoute {
			v.checked++
			if r := c.row(id); r != nil && !slices.Contains(r.routes, route) {
				v.fail("%s: dead-lettered for route %s, but per docs/routing.md it takes %v", describeRow(r), route, r.routes)
			} else if r == nil && !c.led.ambiguous[id] {
				v.fail("dead letter for event %s (route %s) that no writer committed", id, route)
			}
		}
	}
	return v
}

// everyRowMarked: delivered_at is set on every committed row (a row prune
// deleted was marked: prune deletes only marked rows), and the table holds
// nothing else.
func (c *tChecks) everyRowMarked() *tInv {
	v := &tInv{name: "every row is marked (delivered_at set), unrouted rows too"}
	pruned := 0
	for _, id := range c.committedIDs() {
		r := c.row(id)
		v.checked++
		marked, ok := c.st.marked[id]
		switch {
		case !ok && c.prunes > 0:
			pruned++
		case !ok:
			v.fail("%s: vanished from the table (no prune ran)", describeRow(r))
		case !marked && len(r.routes) == 0:
			v.fail("%s: matches no route and was never marked", describeRow(r))
		case !marked:
			v.fail("%s: routes %v, never marked", describeRow(r), r.routes)
		}
	}
	for id := range c.st.marked {
		if c.row(id) == nil && !c.led.ambiguous[id] {
			v.fail("row %s is in the table but no writer committed it (rolled back: %v)", id, c.led.rolledBack[id])
		}
	}
	v.info = fmt.Sprintf("%d rows pruned while streaming", pruned)
	return v
}

// orderPerKey: per route and ordering key, deliveries follow commit order:
// the first deliveries of the rows that were not dead-lettered on the route
// (stream, snapshot and re-sends after crashes), and the sends of one
// dead-letter replay request.
//
// A replay's sends cannot be told from other arrivals of the same rows: a
// dead-lettered row may also have arrived before its replay (a Kafka write
// that failed for the relay but reached the broker during a cut; a
// dead-lettered row whose mark a kill lost, sent again by the next relay's
// snapshot or catch-up), or again after it. Its first arrival is then no
// replay send, and comparing first arrivals reports an order the replay never
// made. So among the rows one request replayed (replay_status 'replayed'),
// the check is that each row, in commit order, has an arrival after the one
// chosen for the row before it (the earliest such): it holds whenever the
// replay sent them in commit order, and fails when the replay sent a key's
// rows out of order and they arrived only then.
func (c *tChecks) orderPerKey() *tInv {
	v := &tInv{name: "per ordering key and route, deliveries follow commit order (stream, snapshot: first deliveries; replay: its sends)"}
	routes := make([]string, 0, len(c.msgs))
	for r := range c.msgs {
		routes = append(routes, r)
	}
	slices.Sort(routes)
	for _, route := range routes {
		seen := map[string]bool{}
		type last struct {
			seq int
			id  string
		}
		lastSeq := map[string]last{}    // key -> last first-delivered seq, stream and snapshot
		pos := map[string][]int{}       // id -> positions of its arrivals, in broker order
		replays := map[string][]*tRow{} // replay group + key -> rows replayed
		for i, m := range c.msgs[route] {
			r := c.row(m.id)
			if r == nil {
				continue
			}
			if pos[m.id] == nil {
				if d := c.st.dls[m.id][route]; d != nil && d.requestedAt != "" && d.status == "replayed" {
					k := "replay requested at " + d.requestedAt + "\x00" + r.key
					replays[k] = append(replays[k], r)
				}
			}
			pos[m.id] = append(pos[m.id], i)
			if seen[m.id] {
				continue
			}
			seen[m.id] = true
			if c.st.dls[m.id][route] != nil {
				continue // dead-lettered: its replay, if any, is checked below
			}
			v.checked++
			if p, ok := lastSeq[r.key]; ok && r.seq < p.seq {
				q := c.row(p.id)
				v.fail("route %s, key %q (stream/snapshot): seq %d (%s, txn %d, %s) first arrived after seq %d (%s, txn %d, %s)", route, clip(r.key, 40),
					r.seq, r.id, r.txn, strings.Join(r.tags, ","), q.seq, q.id, q.txn, strings.Join(q.tags, ","))
			}
			if p, ok := lastSeq[r.key]; !ok || r.seq > p.seq {
				lastSeq[r.key] = last{r.seq, r.id}
			}
		}
		groups := make([]string, 0, len(replays))
		for k := range replays {
			groups = append(groups, k)
		}
		slices.Sort(groups)
		for _, k := range groups {
			rows := replays[k]
			slices.SortFunc(rows, func(a, b *tRow) int { return a.seq - b.seq })
			group, _, _ := strings.Cut(k, "\x00")
			at := -1
			for i, r := range rows {
				v.checked++
				j, _ := slices.BinarySearch(pos[r.id], at+1)
				if j == len(pos[r.id]) {
					q := rows[i-1] // at >= 0 here: the first row always has an arrival
					v.fail("route %s, key %q (%s): seq %d (%s, txn %d, %s) has no arrival after seq %d's (%s, txn %d, %s): the replay sent them out of commit order",
						route, clip(r.key, 40), group, r.seq, r.id, r.txn, strings.Join(r.tags, ","), q.seq, q.id, q.txn, strings.Join(q.tags, ","))
					break
				}
				at = pos[r.id][j]
			}
		}
	}
	return v
}

// valuesRoundTrip: every message carries the payload and the time written,
// on every path; infinity arrives as one value per sign.
func (c *tChecks) valuesRoundTrip() *tInv {
	v := &tInv{name: "values round-trip: payload bytes and occurred_at as written (infinity: one value per sign, the same on every path)"}
	inf := map[tsKind]map[string][]string{tsPosInf: {}, tsNegInf: {}}
	for route, ms := range c.msgs {
		for _, m := range ms {
			r := c.row(m.id)
			if r == nil {
				continue
			}
			v.checked++
			switch {
			case m.hasSum && (m.sum != r.sum || m.plen != r.payloadLen):
				v.fail("%s: route %s (%s): payload of %d bytes arrived as %d different bytes", describeRow(r), route, m.sink, r.payloadLen, m.plen)
			case !m.hasSum && m.canon != r.canon:
				v.fail("%s: route %s (%s): JSON payload arrived as %.80q, want %.80q", describeRow(r), route, m.sink, m.canon, r.canon)
			}
			if r.occ.infinite() {
				inf[r.occ.kind][m.time] = append(inf[r.occ.kind][m.time], route+"/"+m.sink)
				continue
			}
			got, inf, err := pgtime.Parse(m.time) // RFC 3339, or the expanded form of far years
			if err != nil || inf != pgtype.Finite || !got.Equal(r.occ.t) {
				v.fail("%s: route %s (%s): occurred_at %s arrived as %q", describeRow(r), route, m.sink, r.occ.t.Format(time.RFC3339Nano), m.time)
			}
		}
	}
	for _, k := range []tsKind{tsPosInf, tsNegInf} {
		if len(inf[k]) > 1 {
			var vals []string
			for val, where := range inf[k] {
				vals = append(vals, fmt.Sprintf("%q (%d messages, e.g. %s)", val, len(where), where[0]))
			}
			sort.Strings(vals)
			v.fail("occurred_at %s arrives as %d different values: %s", k, len(vals), strings.Join(vals, "; "))
		}
	}
	for val := range inf[tsPosInf] {
		if _, ok := inf[tsNegInf][val]; ok {
			v.fail("occurred_at infinity and -infinity both arrive as %q", val)
		}
	}
	return v
}

// deadLettersExplained: a dead letter is for a route whose sink cannot take
// the row (a failing sink, an odd destination, too large for the broker, odd
// headers) or for a route with few retries (broker cuts); any other is a
// delivery the relay gave up on.
func (c *tChecks) deadLettersExplained() *tInv {
	v := &tInv{name: "dead letters only where the sink cannot take the row or a low-retry route met a cut"}
	for id, byRoute := range c.st.dls {
		r := c.row(id)
		for route, d := range byRoute {
			v.checked++
			rt := c.world.route(route)
			if r == nil || rt == nil || explainedDL(rt, r) {
				continue
			}
			v.fail("%s: dead-lettered on route %s (%s, %d attempts): %.300q", describeRow(r), route, rt.sink, d.attempts, d.lastError)
		}
	}
	return v
}

func explainedDL(rt *tRoute, r *tRow) bool {
	odd := func(tag string) bool { return slices.Contains(r.tags, tag) }
	switch {
	case rt.failing, rt.lowRetry:
		return true
	case rt.sink == "nats" || rt.sink == "kafka":
		if r.payloadLen > 900<<10 || odd("huge header set") || odd("odd headers") {
			return true
		}
		// A subject made from the aggregate id is invalid for ids with
		// spaces, empty tokens and the like.
		return rt.oddDest == "id" && strings.ContainsFunc(r.aggID, func(c rune) bool {
			return !(c < unicode.MaxASCII && (unicode.IsLetter(c) || unicode.IsDigit(c) || c == '-' || c == '_'))
		})
	case rt.sink == "rabbit":
		return odd("huge header set") || odd("odd headers")
	}
	return false
}

// addrsAndSizes are the parts of an error that differ between otherwise
// equal dead letters: addresses with ports, sizes.
var addrsAndSizes = regexp.MustCompile(`[0-9]+(\.[0-9]+){3}:[0-9]+|[0-9]{4,}`)

// dlSummary groups dead letters by route and error.
func (c *tChecks) dlSummary() []string {
	n := map[string]int{}
	for _, byRoute := range c.st.dls {
		for route, d := range byRoute {
			msg := d.lastError
			if i := strings.Index(msg, "event "); i >= 0 && len(msg) > i+42 {
				msg = msg[:i+6] + "<id>" + msg[i+42:]
			}
			msg = addrsAndSizes.ReplaceAllString(msg, "N")
			msg = clip(msg, 110)
			n[fmt.Sprintf("%s (%s) %s: %q", route, d.sink, d.status, msg)]++
		}
	}
	var out []string
	for k, c := range n {
		out = append(out, fmt.Sprintf("%5d  %s", c, k))
	}
	slices.Sort(out)
	return out
}
