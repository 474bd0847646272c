package relay

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
)

// ErrDecode marks a replication message the relay cannot decode.
var ErrDecode = errors.New("decode")

// eventColumns are the columns of the events table the relay reads, in the
// order of the event fields.
var eventColumns = []string{"id", "aggregate_type", "aggregate_id", "event_type", "schema_version",
	"payload", "content_type", "headers", "tenant_id", "occurred_at", "created_at"}

const (
	colID = iota
	colAggregateType
	colAggregateID
	colEventType
	colSchemaVersion
	colPayload
	colContentType
	colHeaders
	colTenantID
	colOccurredAt
	colCreatedAt
	numCols
)

// relationMap maps the events table's column positions, learnt from pgoutput's
// Relation message, to the fields the relay reads.
type relationMap struct {
	id     uint32
	index  [numCols]int // position in the tuple of each wanted column, -1 if absent
	ncols  int
	schema string
	table  string
}

func newRelationMap(rel *pglogrepl.RelationMessage) (*relationMap, error) {
	m := &relationMap{id: rel.RelationID, ncols: len(rel.Columns), schema: rel.Namespace, table: rel.RelationName}
	for i := range m.index {
		m.index[i] = -1
	}
	for pos, c := range rel.Columns {
		for i, name := range eventColumns {
			if c.Name == name {
				m.index[i] = pos
			}
		}
	}
	for _, req := range []int{colID, colAggregateType, colAggregateID, colEventType, colPayload} {
		if m.index[req] < 0 {
			return nil, fmt.Errorf("%w: table %s.%s has no column %q: is it the outbox events table? (run `outbox migrate up`)", ErrDecode, rel.Namespace, rel.RelationName, eventColumns[req])
		}
	}
	return m, nil
}

// pgEpoch is PostgreSQL's timestamp epoch.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// decodeInsert decodes a pgoutput Insert message (the XLogData payload whose
// first byte is 'I') into ev. buf must not be modified afterwards: the event's
// strings and payload point into it.
func decodeInsert(buf []byte, rels map[uint32]*relationMap, ev *Event) (err error) {
	if len(buf) < 8 || buf[0] != 'I' {
		return fmt.Errorf("%w: not an insert message", ErrDecode)
	}
	relID := binary.BigEndian.Uint32(buf[1:])
	rel := rels[relID]
	if rel == nil {
		return fmt.Errorf("%w: insert for unknown relation %d (no Relation message seen)", ErrDecode, relID)
	}
	if buf[5] != 'N' {
		return fmt.Errorf("%w: insert without new tuple", ErrDecode)
	}
	ncols := int(binary.BigEndian.Uint16(buf[6:]))
	off := 8
	var vals [numCols][]byte
	var kinds [numCols]byte
	for pos := range ncols {
		if off >= len(buf) {
			return fmt.Errorf("%w: insert truncated at column %d", ErrDecode, pos)
		}
		kind := buf[off]
		off++
		var data []byte
		switch kind {
		case 'n', 'u':
		case 't', 'b':
			if off+4 > len(buf) {
				return fmt.Errorf("%w: insert truncated at column %d", ErrDecode, pos)
			}
			n := int(binary.BigEndian.Uint32(buf[off:]))
			off += 4
			if n < 0 || off+n > len(buf) {
				return fmt.Errorf("%w: column %d length %d past the message end", ErrDecode, pos, n)
			}
			data = buf[off : off+n : off+n]
			off += n
		default:
			return fmt.Errorf("%w: unknown tuple data kind %q", ErrDecode, kind)
		}
		for i, p := range rel.index {
			if p == pos {
				vals[i], kinds[i] = data, kind
			}
		}
	}
	str := func(i int) string {
		if len(vals[i]) == 0 {
			return ""
		}
		return unsafe.String(&vals[i][0], len(vals[i]))
	}
	// id
	switch kinds[colID] {
	case 'b':
		if len(vals[colID]) != 16 {
			return fmt.Errorf("%w: id is %d bytes, want 16", ErrDecode, len(vals[colID]))
		}
		copy(ev.ID[:], vals[colID])
	case 't':
		if ev.ID, err = uuid.ParseBytes(vals[colID]); err != nil {
			return fmt.Errorf("%w: id: %v", ErrDecode, err)
		}
	default:
		return fmt.Errorf("%w: id is missing", ErrDecode)
	}
	ev.AggregateType = str(colAggregateType)
	ev.AggregateID = str(colAggregateID)
	ev.EventType = str(colEventType)
	ev.SchemaVersion = str(colSchemaVersion)
	ev.ContentType = str(colContentType)
	ev.TenantID = str(colTenantID)
	if kinds[colSchemaVersion] == 'n' || rel.index[colSchemaVersion] < 0 {
		ev.SchemaVersion = "1.0"
	}
	if rel.index[colContentType] < 0 {
		ev.ContentType = "application/json"
	}
	ev.Payload = vals[colPayload]
	if kinds[colPayload] == 't' {
		// bytea in text form: \x followed by hex digits.
		p := vals[colPayload]
		if len(p) >= 2 && p[0] == '\\' && p[1] == 'x' {
			out := make([]byte, hex.DecodedLen(len(p)-2))
			if _, err := hex.Decode(out, p[2:]); err != nil {
				return fmt.Errorf("%w: payload: %v", ErrDecode, err)
			}
			ev.Payload = out
		}
	}
	if ev.Payload == nil {
		ev.Payload = []byte{}
	}
	ev.Headers = nil
	if h := vals[colHeaders]; len(h) > 0 {
		if kinds[colHeaders] == 'b' {
			if h[0] != 1 {
				return fmt.Errorf("%w: headers: unknown jsonb version %d", ErrDecode, h[0])
			}
			h = h[1:]
		}
		ev.Headers = decodeHeaders(h)
	}
	if ev.OccurredAt, err = decodeTime(vals[colOccurredAt], kinds[colOccurredAt]); err != nil {
		return fmt.Errorf("%w: occurred_at: %v", ErrDecode, err)
	}
	if ev.CreatedAt, err = decodeTime(vals[colCreatedAt], kinds[colCreatedAt]); err != nil {
		return fmt.Errorf("%w: created_at: %v", ErrDecode, err)
	}
	return nil
}

// decodeHeaders reads the headers object. Values that are not strings (a hand
// written row may have any JSON) are kept as their JSON text; anything but an
// object yields no headers.
func decodeHeaders(h []byte) map[string]string {
	if len(h) <= 2 || string(h) == "{}" {
		return nil
	}
	if m, ok := scanFlatObject(h); ok {
		return m
	}
	var m map[string]string
	if json.Unmarshal(h, &m) == nil {
		return m
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(h, &raw) != nil {
		return nil
	}
	m = make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			m[k] = s
		} else {
			m[k] = string(v)
		}
	}
	return m
}

func decodeTime(b []byte, kind byte) (time.Time, error) {
	switch kind {
	case 'b':
		if len(b) != 8 {
			return time.Time{}, fmt.Errorf("%d bytes, want 8", len(b))
		}
		us := int64(binary.BigEndian.Uint64(b))
		return pgEpoch.Add(time.Duration(us) * time.Microsecond), nil
	case 't':
		s := string(b)
		for _, layout := range []string{"2006-01-02 15:04:05.999999-07", "2006-01-02 15:04:05.999999-07:00", "2006-01-02 15:04:05.999999-07:00:00"} {
			if t, err := time.Parse(layout, s); err == nil {
				return t, nil
			}
		}
		if strings.HasSuffix(s, "infinity") {
			return time.Time{}, nil
		}
		return time.Time{}, fmt.Errorf("cannot parse %q", s)
	}
	return time.Time{}, nil
}

// scanFlatObject reads a JSON object whose values are all strings without
// escapes, the usual shape of headers (jsonb prints it as {"k": "v", ...}),
// several times faster than encoding/json. Anything else (escapes, numbers,
// nesting) reports false and the caller falls back to encoding/json.
func scanFlatObject(b []byte) (map[string]string, bool) {
	if !utf8.Valid(b) {
		return nil, false // encoding/json replaces bad bytes; jsonb never has them
	}
	i := 0
	skip := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
			i++
		}
	}
	str := func() (string, bool) {
		if i >= len(b) || b[i] != '"' {
			return "", false
		}
		i++
		start := i
		for i < len(b) && b[i] != '"' {
			if b[i] == '\\' || b[i] < 0x20 {
				return "", false
			}
			i++
		}
		if i >= len(b) {
			return "", false
		}
		v := string(b[start:i])
		i++
		return v, true
	}
	skip()
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i++
	m := make(map[string]string, 4)
	for {
		skip()
		k, ok := str()
		if !ok {
			return nil, false
		}
		skip()
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i++
		skip()
		v, ok := str()
		if !ok {
			return nil, false
		}
		m[k] = v
		skip()
		if i >= len(b) {
			return nil, false
		}
		if b[i] == '}' {
			i++
			skip()
			return m, i == len(b)
		}
		if b[i] != ',' {
			return nil, false
		}
		i++
	}
}
