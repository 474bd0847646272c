package relay

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/sdk/pgtime"
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

// rawRow is one events row as the bytes of its columns, in eventColumns
// order, as pgoutput and a query's result both carry them. decode turns it
// into an Event; the stream, a new slot's snapshot and a dead-letter replay
// all go through it, so a row has the same values on every path.
type rawRow struct {
	vals  [numCols][]byte
	kinds [numCols]byte // 'b' binary, 't' text, 'n' NULL, 'u' unchanged TOAST value (never in an insert)
	has   [numCols]bool // the table has the column
}

// decodeInsert decodes a pgoutput Insert message (the XLogData payload whose
// first byte is 'I') into ev. buf must not be modified afterwards: the event's
// strings and payload point into it. An error means the message itself is
// malformed; a value of the row that cannot be decoded is recorded in the
// event instead (see rawRow.decode).
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
	var row rawRow
	for i, p := range rel.index {
		row.has[i] = p >= 0
		row.kinds[i] = 'n'
	}
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
				row.vals[i], row.kinds[i] = data, kind
			}
		}
	}
	return row.decode(ev)
}

// rawRowFromResult builds a rawRow from the current row of a query whose
// columns from first on are eventColumns, in order, copying their bytes into
// one buffer (pgx reuses its own for the next row).
func rawRowFromResult(rows pgx.Rows, first int) rawRow {
	vals := rows.RawValues()[first : first+numCols]
	fds := rows.FieldDescriptions()[first : first+numCols]
	n := 0
	for _, v := range vals {
		n += len(v)
	}
	buf := make([]byte, 0, n)
	var row rawRow
	for i, v := range vals {
		row.has[i] = true
		switch {
		case v == nil:
			row.kinds[i] = 'n'
			continue
		case fds[i].Format == pgx.BinaryFormatCode:
			row.kinds[i] = 'b'
		default:
			row.kinds[i] = 't'
		}
		start := len(buf)
		buf = append(buf, v...)
		row.vals[i] = buf[start:len(buf):len(buf)]
	}
	return row
}

// decode fills ev from the row. It fails only when the id cannot be read (no
// PostgreSQL uuid column gives that). A value that cannot be decoded (a
// header, a timestamp) leaves ev.DecodeErr set, so that the row is
// dead-lettered with the reason instead of stopping the relay.
func (row *rawRow) decode(ev *Event) error {
	str := func(i int) string {
		if len(row.vals[i]) == 0 {
			return ""
		}
		return unsafe.String(&row.vals[i][0], len(row.vals[i]))
	}
	// id
	switch row.kinds[colID] {
	case 'b':
		if len(row.vals[colID]) != 16 {
			return fmt.Errorf("%w: id is %d bytes, want 16", ErrDecode, len(row.vals[colID]))
		}
		copy(ev.ID[:], row.vals[colID])
	case 't':
		var err error
		if ev.ID, err = uuid.ParseBytes(row.vals[colID]); err != nil {
			return fmt.Errorf("%w: id: %v", ErrDecode, err)
		}
	default:
		return fmt.Errorf("%w: id is missing", ErrDecode)
	}
	ev.DecodeErr, ev.RawHeaders = nil, nil
	bad := func(err error) {
		if ev.DecodeErr == nil {
			ev.DecodeErr = fmt.Errorf("%w: %w", ErrDecode, err)
		}
	}
	ev.AggregateType = str(colAggregateType)
	ev.AggregateID = str(colAggregateID)
	ev.EventType = str(colEventType)
	ev.SchemaVersion = str(colSchemaVersion)
	ev.ContentType = str(colContentType)
	ev.TenantID = str(colTenantID)
	if row.kinds[colSchemaVersion] == 'n' || !row.has[colSchemaVersion] {
		ev.SchemaVersion = "1.0"
	}
	if !row.has[colContentType] {
		ev.ContentType = "application/json"
	}
	ev.Payload = row.vals[colPayload]
	if row.kinds[colPayload] == 't' {
		// bytea in text form: \x followed by hex digits.
		p := row.vals[colPayload]
		if len(p) >= 2 && p[0] == '\\' && p[1] == 'x' {
			out := make([]byte, hex.DecodedLen(len(p)-2))
			if _, err := hex.Decode(out, p[2:]); err != nil {
				bad(fmt.Errorf("payload: %v", err))
			} else {
				ev.Payload = out
			}
		}
	}
	if ev.Payload == nil {
		ev.Payload = []byte{}
	}
	ev.Headers = nil
	if h := row.vals[colHeaders]; len(h) > 0 {
		if row.kinds[colHeaders] == 'b' {
			if h[0] != 1 {
				bad(fmt.Errorf("headers: unknown jsonb version %d", h[0]))
				h = nil
			} else {
				h = h[1:]
			}
		}
		var err error
		if ev.Headers, err = decodeHeaders(h); err != nil {
			bad(fmt.Errorf("headers: %w", err))
		}
		ev.RawHeaders = h
	}
	var err error
	if ev.OccurredAt, ev.OccurredAtInf, err = decodeTime(row.vals[colOccurredAt], row.kinds[colOccurredAt]); err != nil {
		bad(fmt.Errorf("occurred_at: %w", err))
	}
	if ev.CreatedAt, ev.CreatedAtInf, err = decodeTime(row.vals[colCreatedAt], row.kinds[colCreatedAt]); err != nil {
		bad(fmt.Errorf("created_at: %w", err))
	}
	return nil
}

// decodeHeaders reads the headers object. Values that are not strings (a
// hand-written row may have any JSON) are kept as their JSON text. Anything
// but a JSON object is an error, and so is a header whose name or value is
// not valid UTF-8 (possible in a SQL_ASCII database), naming the header.
func decodeHeaders(h []byte) (map[string]string, error) {
	if len(h) == 0 || string(h) == "{}" {
		return nil, nil
	}
	if m, ok := scanFlatObject(h); ok {
		if len(m) == 0 {
			return nil, nil
		}
		return m, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(h, &raw); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return nil, fmt.Errorf("a JSON %s, want an object of strings", ute.Value)
		}
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if len(raw) == 0 {
		return nil, nil
	}
	if !utf8.Valid(h) {
		// encoding/json keeps a raw value's bytes and replaces those that
		// are not UTF-8 in a name with U+FFFD.
		names := slices.Sorted(maps.Keys(raw))
		for _, k := range names {
			if !utf8.Valid(raw[k]) {
				return nil, fmt.Errorf("header %q: the value is not valid UTF-8", k)
			}
		}
		for _, k := range names {
			if strings.ContainsRune(k, utf8.RuneError) {
				return nil, fmt.Errorf("header %q: the name is not valid UTF-8", k)
			}
		}
	}
	m := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			m[k] = s
		} else {
			m[k] = string(v)
		}
	}
	return m, nil
}

// decodeTime decodes a timestamptz column: the time in UTC or an infinity.
// A NULL (or absent) column is the zero time.
func decodeTime(b []byte, kind byte) (time.Time, pgtype.InfinityModifier, error) {
	switch kind {
	case 'b':
		return pgtime.DecodeBinary(b)
	case 't':
		return decodeTimeText(b)
	}
	return time.Time{}, pgtype.Finite, nil
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

// decodeTimeText decodes a timestamptz in PostgreSQL's text format (ISO
// DateStyle, any time zone, "BC", "infinity"), in UTC. pgx reads years past
// 9999 and BC dates in text from v5.9 on; the relay requires a newer pgx than
// the SDK's minimum, so this lives here and not in sdk/pgtime.
func decodeTimeText(b []byte) (time.Time, pgtype.InfinityModifier, error) {
	var ts pgtype.Timestamptz
	if err := ts.Scan(string(b)); err != nil {
		return time.Time{}, pgtype.Finite, err
	}
	t, inf := pgtime.FromPG(ts)
	return t, inf, nil
}
