package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/sdk"
)

// This file holds the torture test's writers: each owns a few ordering keys
// and commits transactions of random rows on them, by plain SQL and by the
// SDK, so that the commit order per key is known (one writer per key, one
// transaction at a time). The ledger records what committed.

// tRow is one row the test wrote, as the checks need it.
type tRow struct {
	id          string
	aggType     string
	aggID       string
	eventType   string
	key         string // aggType + "/" + aggID, for maps and reports
	seq         int    // 1, 2, ... per key in commit order
	contentType string
	payloadLen  int
	sum         [32]byte
	canon       string // the payload as canonical JSON, when the stdout sink prints it as JSON
	passN       bool   // payload.n > 50 holds (no evaluation error)
	headers     map[string]string
	occ         tsVal
	path        string // sql or sdk
	tags        []string
	routes      []string // the routes that take it, from the model
	writer, txn int
}

// tKey is an ordering key.
type tKey struct {
	aggType, aggID string
	odd            bool
}

// tCount counts one edge class.
type tCount struct{ committed, rolledBack int }

// tLedger is what the writers did.
type tLedger struct {
	mu         sync.Mutex
	rows       map[string]*tRow   // committed, by id
	perKey     map[string][]*tRow // committed, in commit order
	rolledBack map[string]bool    // ids of rows in rolled-back transactions
	ambiguous  map[string]bool    // ids of rows whose commit failed (unknown outcome)
	tags       map[string]*tCount
	refused    map[string]int // attempts PostgreSQL or the SDK refused, by reason
	accepted   map[string]int // attempts meant to be refused that were accepted
	unexpected []string       // other write errors
	txns       int
	rollbacks  int
}

func newLedger() *tLedger {
	return &tLedger{rows: map[string]*tRow{}, perKey: map[string][]*tRow{}, rolledBack: map[string]bool{},
		ambiguous: map[string]bool{}, tags: map[string]*tCount{}, refused: map[string]int{}, accepted: map[string]int{}}
}

func (l *tLedger) tag(name string) *tCount {
	c := l.tags[name]
	if c == nil {
		c = &tCount{}
		l.tags[name] = c
	}
	return c
}

// tWriter writes the rows of its keys.
type tWriter struct {
	idx     int
	rng     *rand.Rand
	o       *tortureOpts
	world   *tWorld
	pool    *pgxpool.Pool
	sdk     *sdk.Writer
	schema  string
	keys    []tKey
	seq     map[string]int
	led     *tLedger
	bigSize int  // size of the one large payload this writer writes, 0 for none
	bigAt   int  // the transaction that carries it
	txn     int  // transactions begun
	slow    bool // pause between transactions
}

func newTWriter(idx int, seed uint64, o *tortureOpts, world *tWorld, pool *pgxpool.Pool, w *sdk.Writer, schema string, led *tLedger) *tWriter {
	tw := &tWriter{idx: idx, rng: rand.New(rand.NewPCG(seed, uint64(idx)+1)), o: o, world: world, pool: pool, sdk: w,
		schema: schema, seq: map[string]int{}, led: led, slow: true}
	normal := world.aggTypes[:3]
	for j := range 4 {
		tw.keys = append(tw.keys, tKey{aggType: normal[tw.rng.IntN(len(normal))], aggID: fmt.Sprintf("w%d-k%d", idx, j)})
	}
	if o.on("oddids") {
		// Odd from the first byte: a destination that takes a byte slice
		// of the id gets invalid UTF-8.
		for j, id := range []string{"ключ w%d.%d", "😀 w%d x.%d", "..w%d.%d. ", "\tw%d tab\nnl%d"} {
			id = fmt.Sprintf(id, idx, j)
			tw.keys = append(tw.keys, tKey{aggType: world.aggTypes[tw.rng.IntN(len(world.aggTypes))], aggID: id, odd: true})
		}
		// Longer than the SDK accepts (1024 bytes): plain SQL only.
		tw.keys = append(tw.keys, tKey{aggType: "gadget", aggID: strings.Repeat("ü.", 700) + fmt.Sprintf("w%d", idx), odd: true})
	}
	return tw
}

// tDraft is one INSERT: a row to commit, or an attempt meant to be refused.
type tDraft struct {
	row       *tRow
	key       tKey
	payload   []byte
	hdrJSON   string // SQL: "" omits the column (its default, '{}')
	hdrMap    map[string]string
	omitCT    bool
	occText   string // SQL: "" omits the column (now())
	occTime   time.Time
	creText   string
	refuse    string // non-empty: what PostgreSQL or the SDK must refuse
	refuseSDK bool
}

var tortureCTs = []string{"application/json", "application/vnd.torture+json", "text/plain; charset=utf-8", "application/x-protobuf", "application/octet-stream"}

// draft makes a random row on key k for path (sql or sdk).
func (tw *tWriter) draft(k tKey, path string, big int) *tDraft {
	rng, o := tw.rng, tw.o
	d := &tDraft{key: k, row: &tRow{aggType: k.aggType, aggID: k.aggID, key: k.aggType + "/" + k.aggID, path: path, writer: tw.idx}}
	r := d.row
	r.tags = append(r.tags, "path:"+path)
	if k.odd {
		r.tags = append(r.tags, "oddid")
	}
	r.eventType = tortureTypes[rng.IntN(7)]
	if rng.IntN(20) == 0 {
		r.eventType = "blob.stored"
	}
	// Payload and content type.
	ct := "application/json"
	jsonObj := func(n any) []byte {
		m := map[string]any{"writer": tw.idx, "text": "<tag> & ünï \"q\""}
		if n != nil {
			m["n"] = n
		}
		b, _ := json.Marshal(m)
		if rng.IntN(4) == 0 {
			b, _ = json.MarshalIndent(m, "", "   ")
		}
		return b
	}
	switch x := rng.IntN(100); {
	case big > 0:
		ct = "application/octet-stream"
		d.payload = tw.bytes(big)
		r.eventType = "blob.stored"
		r.tags = append(r.tags, "large")
	case o.on("large") && x < 1:
		ct = "application/octet-stream"
		d.payload = tw.bytes(200<<10 + rng.IntN(1300<<10))
		r.tags = append(r.tags, "mid-size (200KB-1.5MB)")
	case o.on("empty") && path == "sql" && x < 5:
		ct = tortureCTs[rng.IntN(len(tortureCTs))]
		d.payload = []byte{}
		r.tags = append(r.tags, "empty payload")
	case o.on("nul") && x < 10:
		if rng.IntN(2) == 0 {
			ct = "application/octet-stream"
			d.payload = append([]byte("nul\x00in\x00the\x00middle"), 0, 0)
		} else {
			d.payload = []byte(`{"n": 60, "s": "a\u0000b"}`)
		}
		r.tags = append(r.tags, "nul")
	case o.on("badutf8") && x < 15:
		ct = "application/x-protobuf"
		d.payload = []byte("\xff\xfe\xc3(\xa0\xa1 invalid utf-8 \xed\xa0\x80")
		r.tags = append(r.tags, "invalid utf-8")
	case o.on("ctypes") && x < 30:
		switch rng.IntN(5) {
		case 0:
			ct = "text/plain; charset=utf-8"
			d.payload = []byte("plain text ünïcödé ✓\r\nline two")
		case 1:
			ct = "application/x-protobuf"
			d.payload = tw.bytes(10 + rng.IntN(300))
		case 2:
			ct = "application/vnd.torture+json"
			d.payload = jsonObj(rng.IntN(100))
		case 3:
			d.payload = []byte(pick(rng, []string{`[1,2,3]`, `"just a string"`, `null`, `42`, `{"n": "not a number"}`}))
			r.tags = append(r.tags, "json not an object")
		case 4:
			if path == "sql" {
				d.payload = []byte(`{"n": 99, broken`)
				r.tags = append(r.tags, "invalid JSON as application/json")
			} else {
				d.payload = jsonObj(nil)
			}
		}
		r.tags = append(r.tags, "ctype:"+ct)
	default:
		if rng.IntN(3) == 0 {
			d.payload = jsonObj(nil)
		} else {
			d.payload = jsonObj(rng.IntN(100))
		}
	}
	r.contentType = ct
	if ct == "application/json" && path == "sql" && rng.IntN(2) == 0 {
		d.omitCT = true
	}
	// Headers.
	h := map[string]string{}
	if rng.IntN(3) == 0 {
		h["tier"] = pick(rng, []string{"gold", "silver"})
	}
	if rng.IntN(4) == 0 {
		h["x-trace"] = fmt.Sprintf("%016x", rng.Uint64())
	}
	var extra string // raw JSON members (non-string values), SQL only
	if o.on("headers") && rng.IntN(12) == 0 {
		n := 150 + rng.IntN(150)
		if path == "sql" {
			n = 300 + rng.IntN(1200)
		}
		for i := range n {
			h[fmt.Sprintf("x-h%04d", i)] = strings.Repeat("v", rng.IntN(40))
		}
		r.tags = append(r.tags, "huge header set")
	}
	if o.on("headers") && rng.IntN(12) == 0 {
		h["ünï key"] = "välue ✓"
		h["quote"] = `a "quoted" \ value`
		h["crlf"] = "line1\r\nInjected: yes"
		h["long"] = strings.Repeat("L", 8000)
		h["empty"] = ""
		if path == "sql" {
			extra = `"num": 1, "obj": {"a": "b"}, "nil": null`
		}
		r.tags = append(r.tags, "odd headers")
	}
	if len(h) > 0 || extra != "" || path == "sdk" || rng.IntN(2) == 0 {
		b, _ := json.Marshal(h)
		s := string(b)
		if extra != "" {
			if len(h) > 0 {
				s = s[:len(s)-1] + ", " + extra + "}"
			} else {
				s = "{" + extra + "}"
			}
		}
		d.hdrJSON = s
	}
	d.hdrMap = h
	r.headers = map[string]string{}
	if v, ok := h["tier"]; ok {
		r.headers["tier"] = v
	}
	// Timestamps.
	kind := tsNormal
	switch x := rng.IntN(100); {
	case o.on("infinity") && path == "sql" && x < 4:
		kind = tsPosInf
	case o.on("infinity") && path == "sql" && x < 8:
		kind = tsNegInf
	case o.on("fartime") && x < 12:
		kind = tsYear1
	case o.on("fartime") && x < 16:
		kind = tsYear2300
	}
	r.occ.kind = kind
	switch kind {
	case tsPosInf:
		d.occText = "infinity"
	case tsNegInf:
		d.occText = "-infinity"
	case tsYear1:
		d.occText, d.occTime = "0001-01-01 00:00:00+00", time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC) // the SDK treats year 1 00:00 as unset
	case tsYear2300:
		d.occText, d.occTime = "2300-01-01 00:00:00+00", time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	default:
		if rng.IntN(2) == 0 {
			t := time.Now().Add(-time.Duration(rng.Int64N(int64(48 * time.Hour)))).Round(time.Microsecond)
			d.occText, d.occTime = t.UTC().Format("2006-01-02 15:04:05.999999")+"+00", t
		}
	}
	r.tags = append(r.tags, "occurred_at:"+kind.String())
	if path == "sql" && rng.IntN(40) == 0 {
		var ck []tsKind
		if o.on("infinity") {
			ck = append(ck, tsPosInf, tsNegInf)
		}
		if o.on("fartime") {
			ck = append(ck, tsYear1, tsYear2300)
		}
		if len(ck) > 0 {
			c := ck[rng.IntN(len(ck))]
			d.creText = map[tsKind]string{tsPosInf: "infinity", tsNegInf: "-infinity", tsYear1: "0001-01-01 00:00:00+00", tsYear2300: "2300-01-01 00:00:00+00"}[c]
			r.tags = append(r.tags, "created_at:"+c.String())
		}
	}
	r.payloadLen = len(d.payload)
	r.sum = sha256.Sum256(d.payload)
	r.canon = canonJSON(d.payload)
	r.passN = passesN(d.payload)
	return d
}

// refusal makes an attempt that PostgreSQL (sql) or the SDK (sdk) must
// refuse: text that PostgreSQL cannot store, or what the SDK validates.
func (tw *tWriter) refusal(k tKey, path string) *tDraft {
	d := tw.draft(k, path, 0)
	var reasons []string
	if tw.o.on("nul") {
		reasons = append(reasons, "NUL in a jsonb header", "NUL in aggregate_id")
	}
	if tw.o.on("badutf8") {
		reasons = append(reasons, "invalid UTF-8 in aggregate_id")
	}
	if path == "sdk" {
		if tw.o.on("empty") {
			reasons = append(reasons, "empty payload (SDK)")
		}
		if tw.o.on("ctypes") {
			reasons = append(reasons, "invalid JSON as application/json (SDK)")
		}
	}
	if len(reasons) == 0 {
		return nil
	}
	d.refuse = pick(tw.rng, reasons)
	switch d.refuse {
	case "NUL in a jsonb header":
		d.hdrJSON = `{"bad": "a\u0000b"}`
		d.hdrMap = map[string]string{"bad": "a\x00b"}
	case "NUL in aggregate_id":
		d.key.aggID += "\x00nul"
	case "invalid UTF-8 in aggregate_id":
		d.key.aggID += "\xff\xfe"
	case "empty payload (SDK)":
		d.payload = []byte{}
	case "invalid JSON as application/json (SDK)":
		d.payload, d.row.contentType = []byte(`{"broken`), "application/json"
	}
	d.row.aggID = d.key.aggID
	d.row.key = d.key.aggType + "/" + d.key.aggID
	d.row.sum = sha256.Sum256(d.payload)
	d.row.payloadLen = len(d.payload)
	d.row.canon = canonJSON(d.payload)
	d.row.passN = passesN(d.payload)
	d.row.tags = append(d.row.tags, "refusal:"+d.refuse)
	return d
}

func pick[T any](rng *rand.Rand, from []T) T { return from[rng.IntN(len(from))] }

func (tw *tWriter) bytes(n int) []byte {
	b := make([]byte, n)
	c := rand.NewChaCha8([32]byte{byte(tw.idx), byte(tw.txn), byte(tw.txn >> 8)})
	c.Read(b)
	return b
}

// canonJSON is the payload as the stdout sink prints it (as JSON) compared
// by value, or "" when the sink prints it base64.
func canonJSON(p []byte) string {
	if !utf8.Valid(p) || !json.Valid(p) {
		return ""
	}
	var v any
	dec := json.NewDecoder(strings.NewReader(string(p)))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// passesN is the CEL filter payload.n > 50 over the payload decoded as JSON,
// as the relay decodes it: an error (not JSON, not an object, no n, n not a
// number) is no match.
func passesN(p []byte) bool {
	var v any
	if json.Unmarshal(p, &v) != nil {
		return false
	}
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	n, ok := m["n"].(float64)
	return ok && n > 50
}

// runTx commits (or rolls back) one random transaction.
func (tw *tWriter) runTx(ctx context.Context) {
	rng := tw.rng
	tw.txn++
	nrows := 1
	switch x := rng.IntN(100); {
	case x < 35:
		nrows = 2 + rng.IntN(4)
	case x < 45:
		nrows = 6 + rng.IntN(20)
	}
	var paths []string
	if tw.o.on("sql") {
		paths = append(paths, "sql")
	}
	if tw.o.on("sdk") {
		paths = append(paths, "sdk", "sdk-batch")
	}
	if tw.o.on("sql") && tw.o.on("sdk") {
		paths = append(paths, "mixed")
	}
	mode := pick(rng, paths)
	big := 0
	if tw.bigSize > 0 && tw.txn >= tw.bigAt {
		// The large payload goes alone, and commits.
		big, tw.bigSize, nrows = tw.bigSize, 0, 1
	}
	burst := nrows > 1 && rng.IntN(3) == 0 // every row on one key: order within a transaction
	bk := tw.keys[rng.IntN(len(tw.keys))]
	var drafts []*tDraft
	for i := range nrows {
		k := tw.keys[rng.IntN(len(tw.keys))]
		if burst {
			k = bk
		}
		for mode == "sdk-batch" && len(k.aggID) > sdk.MaxFieldBytes {
			k = tw.keys[rng.IntN(len(tw.keys))]
			bk = k
		}
		p := mode
		switch mode {
		case "mixed":
			p = pick(rng, []string{"sql", "sdk"})
		case "sdk-batch":
			p = "sdk"
		}
		if p == "sdk" && len(k.aggID) > sdk.MaxFieldBytes {
			p = "sql"
		}
		if rng.IntN(25) == 0 && mode != "sdk-batch" && big == 0 {
			if d := tw.refusal(k, p); d != nil {
				drafts = append(drafts, d)
				continue
			}
		}
		b := 0
		if i == 0 {
			b = big
		}
		drafts = append(drafts, tw.draft(k, p, b))
	}
	rollback := tw.o.on("rollback") && rng.IntN(16) == 0 && big == 0

	tx, err := tw.pool.Begin(ctx)
	if err != nil {
		if ctx.Err() == nil {
			tw.unexpected("begin: %v", err)
		}
		return
	}
	defer tx.Rollback(context.Background())
	var written []*tDraft
	if mode == "sdk-batch" {
		evs := make([]sdk.Event, len(drafts))
		for i, d := range drafts {
			evs[i] = d.sdkEvent()
		}
		if err := tw.sdk.WriteBatch(ctx, tx, evs); err != nil {
			if ctx.Err() == nil {
				tw.unexpected("sdk batch of %d: %v", len(evs), err)
			}
			return
		}
		for i, d := range drafts {
			d.row.id, d.row.occ.t = evs[i].ID.String(), evs[i].OccurredAt
			written = append(written, d)
		}
	} else {
		for _, d := range drafts {
			ok, err := tw.insert(ctx, tx, d)
			if err != nil {
				if ctx.Err() == nil {
					tw.unexpected("%s insert (%v): %v", d.row.path, d.row.tags, err)
				}
				return
			}
			if ok {
				written = append(written, d)
			}
		}
	}
	tw.led.mu.Lock()
	tw.led.txns++
	tw.led.mu.Unlock()
	if rollback {
		if err := tx.Rollback(ctx); err != nil {
			tw.unexpected("rollback: %v", err)
		}
		tw.led.mu.Lock()
		tw.led.rollbacks++
		for _, d := range written {
			tw.led.rolledBack[d.row.id] = true
			for _, tg := range append(d.row.tags, "all rows") {
				tw.led.tag(tg).rolledBack++
			}
		}
		tw.led.mu.Unlock()
		return
	}
	if err := tx.Commit(ctx); err != nil {
		tw.led.mu.Lock()
		for _, d := range written {
			tw.led.ambiguous[d.row.id] = true
		}
		tw.led.mu.Unlock()
		if ctx.Err() == nil {
			tw.unexpected("commit: %v", err)
		}
		return
	}
	tw.led.mu.Lock()
	defer tw.led.mu.Unlock()
	for _, d := range written {
		r := d.row
		tw.seq[r.key]++
		r.seq, r.txn = tw.seq[r.key], tw.txn
		r.routes = tw.world.routesFor(r)
		if len(r.routes) == 0 {
			r.tags = append(r.tags, "unrouted")
		}
		tw.led.rows[r.id] = r
		tw.led.perKey[r.key] = append(tw.led.perKey[r.key], r)
		for _, tg := range append(r.tags, "all rows") {
			tw.led.tag(tg).committed++
		}
	}
}

func (tw *tWriter) unexpected(format string, args ...any) {
	tw.led.mu.Lock()
	defer tw.led.mu.Unlock()
	if len(tw.led.unexpected) < 1000 {
		tw.led.unexpected = append(tw.led.unexpected, fmt.Sprintf("writer %d: ", tw.idx)+fmt.Sprintf(format, args...))
	}
}

func (d *tDraft) sdkEvent() sdk.Event {
	return sdk.Event{AggregateType: d.key.aggType, AggregateID: d.key.aggID, EventType: d.row.eventType, Payload: d.payload,
		ContentType: d.row.contentType, Headers: d.hdrMap, OccurredAt: d.occTime}
}

// insert writes one draft; it reports whether a row was written. A refusal
// that is refused is counted and leaves the transaction usable (a savepoint).
func (tw *tWriter) insert(ctx context.Context, tx pgx.Tx, d *tDraft) (bool, error) {
	r := d.row
	if r.path == "sdk" {
		ev := d.sdkEvent()
		err := tw.sdk.Write(ctx, tx, &ev)
		var verr *sdk.ValidationError
		if d.refuse != "" && errors.As(err, &verr) {
			tw.refused(d.refuse)
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if d.refuse != "" {
			tw.acceptedRefusal(d.refuse)
		}
		r.id, r.occ.t = ev.ID.String(), ev.OccurredAt
		return true, nil
	}
	cols := []string{"aggregate_type", "aggregate_id", "event_type", "payload"}
	vals := []string{"$1", "$2", "$3", "$4"}
	args := []any{d.key.aggType, d.key.aggID, r.eventType, d.payload}
	add := func(col, cast string, v any) {
		args = append(args, v)
		cols = append(cols, col)
		vals = append(vals, fmt.Sprintf("$%d%s", len(args), cast))
	}
	if !d.omitCT {
		add("content_type", "", r.contentType)
	}
	if d.hdrJSON != "" {
		add("headers", "::jsonb", d.hdrJSON)
	}
	if d.occText != "" {
		add("occurred_at", "::timestamptz", d.occText)
	}
	if d.creText != "" {
		add("created_at", "::timestamptz", d.creText)
	}
	q := "INSERT INTO " + tw.schema + ".events (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(vals, ", ") + ") RETURNING id::text, occurred_at"
	var occ pgtype.Timestamptz
	if d.refuse != "" {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return false, err
		}
		if err := sp.QueryRow(ctx, q, args...).Scan(&r.id, &occ); err != nil {
			if rerr := sp.Rollback(ctx); rerr != nil {
				return false, rerr
			}
			tw.refused(d.refuse)
			return false, nil
		}
		if err := sp.Commit(ctx); err != nil {
			return false, err
		}
		tw.acceptedRefusal(d.refuse)
	} else if err := tx.QueryRow(ctx, q, args...).Scan(&r.id, &occ); err != nil {
		return false, err
	}
	switch occ.InfinityModifier {
	case pgtype.Infinity:
		r.occ.kind = tsPosInf
	case pgtype.NegativeInfinity:
		r.occ.kind = tsNegInf
	default:
		r.occ.t = occ.Time.UTC()
	}
	return true, nil
}

func (tw *tWriter) refused(reason string) {
	tw.led.mu.Lock()
	tw.led.refused[reason]++
	tw.led.mu.Unlock()
}

func (tw *tWriter) acceptedRefusal(reason string) {
	tw.led.mu.Lock()
	tw.led.accepted[reason]++
	tw.led.mu.Unlock()
}

// run writes transactions until ctx ends, or n of them when n > 0.
func (tw *tWriter) run(ctx context.Context, n int) {
	for i := 0; ctx.Err() == nil && (n == 0 || i < n); i++ {
		tw.runTx(ctx)
		if tw.slow {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(40+tw.rng.IntN(120)) * time.Millisecond):
			}
		}
	}
}

// sortedTags lists the ledger's tags for the report.
func (l *tLedger) sortedTags() []string {
	var out []string
	for k := range l.tags {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
