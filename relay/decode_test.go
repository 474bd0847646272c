package relay

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
)

// col is one column of a test insert: kind 'b', 't', 'n' or 'u'.
type col struct {
	kind byte
	data []byte
}

func insertMsg(relID uint32, cols []col) []byte {
	b := []byte{'I'}
	b = binary.BigEndian.AppendUint32(b, relID)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, c.kind)
		if c.kind == 'b' || c.kind == 't' {
			b = binary.BigEndian.AppendUint32(b, uint32(len(c.data)))
			b = append(b, c.data...)
		}
	}
	return b
}

func testRelation() map[uint32]*relationMap {
	rel := &pglogrepl.RelationMessage{RelationID: 7, Namespace: "outbox", RelationName: "events"}
	for _, n := range append(append([]string{}, eventColumns...), "delivered_at") {
		rel.Columns = append(rel.Columns, &pglogrepl.RelationMessageColumn{Name: n})
	}
	m, err := newRelationMap(rel)
	if err != nil {
		panic(err)
	}
	return map[uint32]*relationMap{7: m}
}

func pgTime(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(t.Sub(pgEpoch).Microseconds()))
}

func sampleInsert() []byte {
	id := uuid.MustParse("01a21c35-69ed-7291-9412-bbf9bec8f345")
	at := time.Date(2026, 11, 27, 8, 0, 0, 123456000, time.UTC)
	return insertMsg(7, []col{
		{'b', id[:]}, {'b', []byte("order")}, {'b', []byte("42")}, {'b', []byte("order.created")}, {'b', []byte("1.2")},
		{'b', []byte(`{"total":5}`)}, {'b', []byte("application/json")}, {'b', append([]byte{1}, `{"traceparent": "00-abc", "n": 5}`...)},
		{'n', nil}, {'b', pgTime(at)}, {'b', pgTime(at)}, {'n', nil},
	})
}

func TestDecodeInsert(t *testing.T) {
	var ev Event
	if err := decodeInsert(sampleInsert(), testRelation(), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.ID.String() != "01a21c35-69ed-7291-9412-bbf9bec8f345" || ev.AggregateType != "order" || ev.AggregateID != "42" ||
		ev.EventType != "order.created" || ev.SchemaVersion != "1.2" || string(ev.Payload) != `{"total":5}` || ev.TenantID != "" {
		t.Errorf("decoded %+v", ev)
	}
	if ev.Headers["traceparent"] != "00-abc" || ev.Headers["n"] != "5" {
		t.Errorf("headers %v", ev.Headers)
	}
	if want := time.Date(2026, 11, 27, 8, 0, 0, 123456000, time.UTC); !ev.OccurredAt.Equal(want) {
		t.Errorf("occurred_at %v, want %v", ev.OccurredAt, want)
	}
	// Text format (binary off) decodes too.
	txt := insertMsg(7, []col{{'t', []byte("01a21c35-69ed-7291-9412-bbf9bec8f345")}, {'t', []byte("a")}, {'t', []byte("1")}, {'t', []byte("e")},
		{'t', []byte("1.0")}, {'t', []byte(`\x7b7d`)}, {'t', []byte("application/json")}, {'t', []byte(`{}`)}, {'t', []byte("t1")},
		{'t', []byte("2026-11-27 08:00:00.5+00")}, {'t', []byte("2026-11-27 08:00:00.5+00")}, {'n', nil}})
	if err := decodeInsert(txt, testRelation(), &ev); err != nil {
		t.Fatal(err)
	}
	if string(ev.Payload) != "{}" || ev.TenantID != "t1" || ev.OccurredAt.Nanosecond() != 5e8 {
		t.Errorf("text decode: %+v", ev)
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
		var ev Event
		if err := decodeInsert(msg, testRelation(), &ev); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func FuzzDecodeInsert(f *testing.F) {
	f.Add(sampleInsert())
	f.Add(insertMsg(7, []col{{'t', []byte("x")}}))
	rels := testRelation()
	f.Fuzz(func(t *testing.T, msg []byte) {
		var ev Event
		decodeInsert(msg, rels, &ev) // must not panic
	})
}

func BenchmarkDecodeInsert(b *testing.B) {
	msg := sampleInsert()
	rels := testRelation()
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		var ev Event
		if err := decodeInsert(msg, rels, &ev); err != nil {
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
		`[1,2]`:                                  "",
		`{"a": "b"} trailing`:                    "",
	} {
		m := decodeHeaders([]byte(in))
		var parts []string
		for k, v := range m {
			parts = append(parts, k+"="+v)
		}
		slices.Sort(parts)
		if got := strings.Join(parts, ","); got != want {
			t.Errorf("decodeHeaders(%s) = %q, want %q", in, got, want)
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
