package pgoutput

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/internal/pgoutput/pgoutputtest"
	"github.com/outboxrelay/outbox/sdk/pgtime"
)

// col is one column of a test insert: kind 'b', 't', 'n' or 'u'.
type col struct {
	kind byte
	data []byte
}

func insertMsg(relID uint32, cols []col) []byte {
	pc := make([]pgoutputtest.Col, len(cols))
	for i, c := range cols {
		pc[i] = pgoutputtest.Col{Kind: c.kind, Data: c.data}
	}
	return pgoutputtest.Insert(relID, pc)
}

func testRelation() map[uint32]*relation {
	rel := &pglogrepl.RelationMessage{RelationID: 7, Namespace: "outbox", RelationName: "events"}
	for _, n := range append(append([]string{}, columns...), "delivered_at") {
		rel.Columns = append(rel.Columns, &pglogrepl.RelationMessageColumn{Name: n})
	}
	m, err := newRelation(rel)
	if err != nil {
		panic(err)
	}
	return map[uint32]*relation{7: m}
}

func pgTime(t time.Time) []byte { return pgMicros(t) }

func sampleInsert() []byte { return pgoutputtest.SampleInsert(7) }

func TestDecodeInsert(t *testing.T) {
	var row Row
	if err := decodeInsert(sampleInsert(), testRelation(), &row); err != nil {
		t.Fatal(err)
	}
	if row.ID.String() != "01a21c35-69ed-7291-9412-bbf9bec8f345" || row.AggregateType != "order" || row.AggregateID != "42" ||
		row.EventType != "order.created" || row.SchemaVersion != "1.2" || string(row.Payload) != `{"total":5}` || row.TenantID != "" {
		t.Errorf("decoded %+v", row)
	}
	if row.Headers["traceparent"] != "00-abc" || row.Headers["n"] != "5" {
		t.Errorf("headers %v", row.Headers)
	}
	if want := time.Date(2026, 11, 27, 8, 0, 0, 123456000, time.UTC); !row.OccurredAt.Equal(want) {
		t.Errorf("occurred_at %v, want %v", row.OccurredAt, want)
	}
	// Text format (binary off) decodes too.
	txt := insertMsg(7, []col{{'t', []byte("01a21c35-69ed-7291-9412-bbf9bec8f345")}, {'t', []byte("a")}, {'t', []byte("1")}, {'t', []byte("e")},
		{'t', []byte("1.0")}, {'t', []byte(`\x7b7d`)}, {'t', []byte("application/json")}, {'t', []byte(`{}`)}, {'t', []byte("t1")},
		{'t', []byte("2026-11-27 08:00:00.5+00")}, {'t', []byte("2026-11-27 08:00:00.5+00")}, {'n', nil}})
	if err := decodeInsert(txt, testRelation(), &row); err != nil {
		t.Fatal(err)
	}
	if string(row.Payload) != "{}" || row.TenantID != "t1" || row.OccurredAt.Nanosecond() != 5e8 {
		t.Errorf("text decode: %+v", row)
	}
}

func TestDecodeInsertErrors(t *testing.T) {
	good := sampleInsert()
	for name, msg := range map[string][]byte{
		"truncated":        good[:len(good)-3],
		"unknown relation": insertMsg(8, nil),
		"short id":         insertMsg(7, []col{{'b', []byte{1, 2}}}),
		"bad kind":         append(good[:8:8], 'x'),
		"empty":            {},
	} {
		var row Row
		if err := decodeInsert(msg, testRelation(), &row); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func FuzzDecodeInsert(f *testing.F) {
	f.Add(sampleInsert())
	f.Add(insertMsg(7, []col{{'t', []byte("x")}}))
	// Timestamps at and past the edges: ±infinity, PostgreSQL's lowest and
	// highest, one past each, 0001-01-01, and their text forms.
	for _, b := range [][]byte{infBytes, negInfBytes, pgMicros(edgeTimes[0]), pgMicros(edgeTimes[1]), pgMicros(edgeTimes[4]),
		binary.BigEndian.AppendUint64(nil, uint64(9_223_371_331_200_000_000)), binary.BigEndian.AppendUint64(nil, uint64(1<<63+1))} {
		f.Add(timeInsert(b, infBytes))
	}
	for _, s := range []string{"infinity", "-infinity", "4713-01-01 00:00:00+00 BC", "294276-12-31 23:59:59.999999+00", "4714-11-23 23:59:59+00 BC", "0000-01-01 00:00:00+00"} {
		f.Add(textTimeInsert(s, s))
	}
	rels := testRelation()
	f.Fuzz(func(t *testing.T, msg []byte) {
		var row Row
		if decodeInsert(msg, rels, &row) != nil || row.Err != nil {
			return // must not panic
		}
		// A timestamp that decodes formats and parses back to itself.
		for _, v := range []struct {
			t   time.Time
			inf pgtype.InfinityModifier
		}{{row.OccurredAt, row.OccurredAtInf}, {row.CreatedAt, row.CreatedAtInf}} {
			got, inf, err := pgtime.Parse(pgtime.Format(v.t, v.inf))
			if err != nil || got != v.t || inf != v.inf {
				t.Fatalf("%v %v formats as %q, parses as %v %v %v", v.t, v.inf, pgtime.Format(v.t, v.inf), got, inf, err)
			}
		}
	})
}

func BenchmarkDecodeInsert(b *testing.B) {
	msg := sampleInsert()
	rels := testRelation()
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		var row Row
		if err := decodeInsert(msg, rels, &row); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDecodeHeaders(t *testing.T) {
	for in, want := range map[string]string{
		`{"traceparent": "00-a-b-01", "k": "v"}`: "k=v,traceparent=00-a-b-01",
		`{"a":"b"}`:                              "a=b",
		`{"n": 5, "s": "x"}`:                     "n=5,s=x",
		`{"esc": "a\"b"}`:                        `esc=a"b`,
		`{"nested": {"x": 1}}`:                   `nested={"x": 1}`,
		`{"null": null}`:                         "null=",
		`null`:                                   "",
		`{}`:                                     "",
		`  { }  `:                                "",
		``:                                       "",
	} {
		m, err := decodeHeaders([]byte(in))
		if err != nil {
			t.Errorf("decodeHeaders(%s): %v", in, err)
			continue
		}
		var parts []string
		for k, v := range m {
			parts = append(parts, k+"="+v)
		}
		slices.Sort(parts)
		if got := strings.Join(parts, ","); got != want {
			t.Errorf("decodeHeaders(%s) = %q, want %q", in, got, want)
		}
	}
	// Errors say what is wrong, naming the header when one is at fault.
	for in, want := range map[string]string{
		`[1,2]`:               "a JSON array, want an object of strings",
		`"x"`:                 "a JSON string, want an object of strings",
		`{"a": "b"} trailing`: "not valid JSON",
		"{\"ok\": \"v\", \"x-bad\": \"\xff\xfe\"}": `header "x-bad": the value is not valid UTF-8`,
		"{\"ok\": \"v\", \"\xffname\": \"v\"}":     "header \"\ufffdname\": the name is not valid UTF-8",
	} {
		_, err := decodeHeaders([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("decodeHeaders(%q) error %v, want %q", in, err, want)
		}
	}
}

func FuzzDecodeHeaders(f *testing.F) {
	f.Add([]byte(`{"traceparent": "00-a-b-01"}`))
	f.Add([]byte(`{"a": "\u00e9", "b": 1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := scanFlatObject(b)
		if !ok {
			return
		}
		// What the fast path accepts, encoding/json must read the same way.
		var slow map[string]string
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json: %v", b, err)
		}
		if len(fast) != len(slow) {
			t.Fatalf("%q: fast %v, slow %v", b, fast, slow)
		}
		for k, v := range slow {
			if fast[k] != v {
				t.Fatalf("%q: fast %v, slow %v", b, fast, slow)
			}
		}
	})
}

// edgeTimes are timestamps far from 2000, where a time.Duration overflows.
var edgeTimes = []time.Time{
	time.Date(-4712, 1, 1, 0, 0, 0, 0, time.UTC), // 4713 BC, PostgreSQL's lowest year
	time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
	time.Date(1707, 6, 1, 12, 0, 0, 123456000, time.UTC),
	time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC),
	time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC), // the highest
}

func pgMicros(t time.Time) []byte { return pgoutputtest.Micros(t) }

func timeInsert(occurred, created []byte) []byte {
	id := uuid.MustParse("01a21c35-69ed-7291-9412-bbf9bec8f345")
	return insertMsg(7, []col{
		{'b', id[:]}, {'b', []byte("order")}, {'b', []byte("42")}, {'b', []byte("order.created")}, {'b', []byte("1.0")},
		{'b', []byte(`{}`)}, {'b', []byte("application/json")}, {'b', []byte{1, '{', '}'}},
		{'n', nil}, {'b', occurred}, {'b', created}, {'n', nil},
	})
}

var (
	infBytes    = binary.BigEndian.AppendUint64(nil, math.MaxInt64)
	negInfBytes = binary.BigEndian.AppendUint64(nil, 1<<63)
)

func textTimeInsert(occurred, created string) []byte {
	return insertMsg(7, []col{{'t', []byte("01a21c35-69ed-7291-9412-bbf9bec8f345")}, {'t', []byte("a")}, {'t', []byte("1")}, {'t', []byte("e")},
		{'t', []byte("1.0")}, {'t', []byte(`\x7b7d`)}, {'t', []byte("application/json")}, {'t', []byte(`{}`)}, {'n', nil},
		{'t', []byte(occurred)}, {'t', []byte(created)}, {'n', nil}})
}

func TestDecodeInsertEdgeTimestamps(t *testing.T) {
	for _, at := range edgeTimes {
		var row Row
		if err := decodeInsert(timeInsert(pgMicros(at), pgMicros(at)), testRelation(), &row); err != nil {
			t.Fatalf("%v: %v", at, err)
		}
		if row.OccurredAt != at || row.CreatedAt != at || row.OccurredAtInf != pgtype.Finite || row.Err != nil {
			t.Errorf("%v decoded as occurred_at %v, created_at %v (%v)", at, row.OccurredAt, row.CreatedAt, row.Err)
		}
	}
	var row Row
	if err := decodeInsert(timeInsert(infBytes, negInfBytes), testRelation(), &row); err != nil {
		t.Fatal(err)
	}
	if row.OccurredAtInf != pgtype.Infinity || row.CreatedAtInf != pgtype.NegativeInfinity || !row.OccurredAt.IsZero() || !row.CreatedAt.IsZero() {
		t.Errorf("infinity, -infinity decoded as %v %v, %v %v", row.OccurredAt, row.OccurredAtInf, row.CreatedAt, row.CreatedAtInf)
	}
	// Text format (binary off), as PostgreSQL writes it.
	for _, c := range []struct {
		text string
		at   time.Time
		inf  pgtype.InfinityModifier
	}{
		{"infinity", time.Time{}, pgtype.Infinity},
		{"-infinity", time.Time{}, pgtype.NegativeInfinity},
		{"4713-01-01 00:00:00+00 BC", edgeTimes[0], 0},
		{"0001-01-01 01:00:00+01", edgeTimes[1], 0},
		{"294276-12-31 23:59:59.999999+00", edgeTimes[4], 0},
		{"2026-11-27 08:00:00.5-03:30:15", time.Date(2026, 11, 27, 11, 30, 15, 5e8, time.UTC), 0},
	} {
		var row Row
		if err := decodeInsert(textTimeInsert(c.text, c.text), testRelation(), &row); err != nil {
			t.Fatal(err)
		}
		if row.OccurredAt != c.at || row.OccurredAtInf != c.inf || row.CreatedAt != c.at || row.Err != nil {
			t.Errorf("%q decoded as %v %v (%v), want %v %v", c.text, row.OccurredAt, row.OccurredAtInf, row.Err, c.at, c.inf)
		}
	}
}

// TestDecodeInsertBadValues: a value that cannot be decoded does not fail
// the message (which would stop the stream at that row, again on every
// start); the event records why, and everything else is decoded.
func TestDecodeInsertBadValues(t *testing.T) {
	id := uuid.MustParse("01a21c35-69ed-7291-9412-bbf9bec8f345")
	good := pgMicros(edgeTimes[1])
	for name, c := range map[string]struct {
		headers  []byte
		occurred []byte
		want     string
	}{
		"headers not an object": {append([]byte{1}, `[1, 2]`...), good, "headers: a JSON array"},
		"header not UTF-8":      {append([]byte{1}, "{\"x-trace\": \"\xff\"}"...), good, `headers: header "x-trace": the value is not valid UTF-8`},
		"jsonb version":         {append([]byte{9}, `{}`...), good, "unknown jsonb version 9"},
		"timestamp too large":   {[]byte{1, '{', '}'}, binary.BigEndian.AppendUint64(nil, math.MaxInt64-1), "occurred_at: timestamptz"},
		"timestamp short":       {[]byte{1, '{', '}'}, []byte{1, 2, 3}, "occurred_at: timestamptz is 3 bytes"},
	} {
		msg := insertMsg(7, []col{
			{'b', id[:]}, {'b', []byte("order")}, {'b', []byte("42")}, {'b', []byte("order.created")}, {'b', []byte("1.0")},
			{'b', []byte(`{}`)}, {'b', []byte("application/json")}, {'b', c.headers}, {'n', nil}, {'b', c.occurred}, {'b', good}, {'n', nil},
		})
		var row Row
		if err := decodeInsert(msg, testRelation(), &row); err != nil {
			t.Errorf("%s: the message failed (%v); want the row marked undecodable", name, err)
			continue
		}
		if row.Err == nil || !strings.Contains(row.Err.Error(), c.want) || !errors.Is(row.Err, ErrDecode) {
			t.Errorf("%s: decode error %v, want one with %q", name, row.Err, c.want)
		}
		if row.ID != id || row.EventType != "order.created" || row.CreatedAt != edgeTimes[1] {
			t.Errorf("%s: the rest of the row was not decoded: %+v", name, row)
		}
	}
	// A text timestamp PostgreSQL would not write.
	var row Row
	if err := decodeInsert(textTimeInsert("yesterday-ish", "2026-11-27 08:00:00+00"), testRelation(), &row); err != nil || row.Err == nil ||
		!strings.Contains(row.Err.Error(), "occurred_at") {
		t.Errorf("unparseable text timestamp: err %v, decode error %v", err, row.Err)
	}
}

// TestDecodeTimeText reads timestamptz text of every range PostgreSQL writes.
func TestDecodeTimeText(t *testing.T) {
	for in, want := range map[string]string{
		"infinity":                        "infinity",
		"-infinity":                       "-infinity",
		"2026-03-01 12:00:00.5+01":        "2026-03-01T11:00:00.5Z",
		"0001-01-01 00:00:00+00":          "0001-01-01T00:00:00Z",
		"10000-01-01 00:00:00+00":         "+010000-01-01T00:00:00Z",
		"294276-12-31 23:59:59.999999+00": "+294276-12-31T23:59:59.999999Z",
		"4714-11-24 00:00:00+00 BC":       "-004713-11-24T00:00:00Z",
	} {
		tm, inf, err := decodeTimeText([]byte(in))
		if got := pgtime.Format(tm, inf); err != nil || got != want {
			t.Errorf("decodeTimeText(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// BenchmarkDecodeInsertHeaders decodes an insert whose headers are empty, a
// traceparent (an instrumented service's event), or hold a non-string value
// (a hand-written row: decoded twice).
func BenchmarkDecodeInsertHeaders(b *testing.B) {
	for _, tc := range []struct{ name, headers string }{
		{"none", `{}`},
		{"traceparent", `{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`},
		{"mixed", `{"traceparent": "00-abc", "n": 5}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			id := [16]byte{1, 2, 3}
			at := pgTime(time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC))
			msg := insertMsg(7, []col{
				{'b', id[:]}, {'b', []byte("order")}, {'b', []byte("42")}, {'b', []byte("order.created")}, {'b', []byte("1.0")},
				{'b', make([]byte, 300)}, {'b', []byte("application/json")}, {'b', append([]byte{1}, tc.headers...)},
				{'n', nil}, {'b', at}, {'b', at}, {'n', nil},
			})
			rels := testRelation()
			b.ReportAllocs()
			for b.Loop() {
				var row Row
				if err := decodeInsert(msg, rels, &row); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
