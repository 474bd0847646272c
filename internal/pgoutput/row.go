package pgoutput

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
	"github.com/outboxrelay/outbox/sdk/pgtime"
)

// ErrDecode marks a message or a value that cannot be decoded.
var ErrDecode = errors.New("decode")

// ErrNotOutbox marks a Relation message for a table named like the outbox's
// events table that lacks one of its required columns.
var ErrNotOutbox = errors.New("not the outbox events table")

// columns are outboxschema.EventColumns, the columns a Row holds; the col
// constants index them.
var columns = outboxschema.ColumnNames(outboxschema.EventColumns)

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

// Row is one row of the outbox's events table, decoded: the columns of an
// event (outboxschema.EventColumns) and, for a row read from the stream, its
// transaction's commit. Its strings and payload point into the bytes it was
// decoded from, which the Decoder and ScanResult copy for each row: they
// stay valid after the next row is read.
type Row struct {
	ID            uuid.UUID
	AggregateType string
	AggregateID   string
	EventType     string
	// SchemaVersion is "1.0" when the column is NULL or the table has none.
	SchemaVersion string
	Payload       []byte
	// ContentType is "application/json" when the table has no such column.
	ContentType string
	// Headers are the headers column's object; values that are not JSON
	// strings are kept as their JSON text.
	Headers  map[string]string
	TenantID string // empty when NULL
	// OccurredAt and CreatedAt are in UTC, of any year PostgreSQL stores;
	// OccurredAtInf and CreatedAtInf say when the column holds 'infinity'
	// or '-infinity' (the time is then zero).
	OccurredAt, CreatedAt       time.Time
	OccurredAtInf, CreatedAtInf pgtype.InfinityModifier

	// CommitTime and CommitLSN are the writing transaction's commit time
	// and commit record (from its Begin message); zero for a row read from
	// a query result.
	CommitTime time.Time
	CommitLSN  pglogrepl.LSN

	// RawHeaders is the headers column's JSON as read, so that a copy of
	// the row (a dead letter) can keep it exactly.
	RawHeaders []byte
	// Err is set when a value of the row cannot be decoded (a header, a
	// timestamp); the rest of the row is decoded. It wraps ErrDecode.
	Err error
}

// rawRow is one events row as the bytes of its columns, in columns order,
// as pgoutput and a binary query result both carry them. decode turns it
// into a Row: the stream, a new slot's snapshot and a dead letter's copy all
// go through it, so a row has the same values on every path.
type rawRow struct {
	vals  [numCols][]byte
	kinds [numCols]byte // 'b' binary, 't' text, 'n' NULL, 'u' unchanged TOAST value (never in an insert)
	has   [numCols]bool // the table has the column
}

// ScanResult decodes the current row of rows, whose columns from first on
// are outboxschema.EventColumns in order (in binary format, as pgoutput
// sends them, or text), into row. It copies the bytes (pgx reuses its
// buffer for the next row). It fails only when the id cannot be read; a
// value that cannot be decoded sets row.Err.
func ScanResult(rows pgx.Rows, first int, row *Row) error {
	raw := rawFromResult(rows, first)
	return raw.decode(row)
}

func rawFromResult(rows pgx.Rows, first int) rawRow {
	vals := rows.RawValues()[first : first+numCols]
	fds := rows.FieldDescriptions()[first : first+numCols]
	n := 0
	for _, v := range vals {
		n += len(v)
	}
	buf := make([]byte, 0, n)
	var raw rawRow
	for i, v := range vals {
		raw.has[i] = true
		switch {
		case v == nil:
			raw.kinds[i] = 'n'
			continue
		case fds[i].Format == pgx.BinaryFormatCode:
			raw.kinds[i] = 'b'
		default:
			raw.kinds[i] = 't'
		}
		start := len(buf)
		buf = append(buf, v...)
		raw.vals[i] = buf[start:len(buf):len(buf)]
	}
	return raw
}

// decode fills row from raw, replacing all it held. It fails only when the
// id cannot be read (no PostgreSQL uuid column gives that). A value that
// cannot be decoded (a header, a timestamp) sets row.Err, so that the row
// is dead-lettered with the reason instead of stopping the relay.
func (raw *rawRow) decode(row *Row) error {
	str := func(i int) string {
		if len(raw.vals[i]) == 0 {
			return ""
		}
		return unsafe.String(&raw.vals[i][0], len(raw.vals[i]))
	}
	*row = Row{}
	switch raw.kinds[colID] {
	case 'b':
		if len(raw.vals[colID]) != 16 {
			return fmt.Errorf("%w: id is %d bytes, want 16", ErrDecode, len(raw.vals[colID]))
		}
		copy(row.ID[:], raw.vals[colID])
	case 't':
		var err error
		if row.ID, err = uuid.ParseBytes(raw.vals[colID]); err != nil {
			return fmt.Errorf("%w: id: %v", ErrDecode, err)
		}
	default:
		return fmt.Errorf("%w: id is missing", ErrDecode)
	}
	bad := func(err error) {
		if row.Err == nil {
			row.Err = fmt.Errorf("%w: %w", ErrDecode, err)
		}
	}
	row.AggregateType = str(colAggregateType)
	row.AggregateID = str(colAggregateID)
	row.EventType = str(colEventType)
	row.SchemaVersion = str(colSchemaVersion)
	row.ContentType = str(colContentType)
	row.TenantID = str(colTenantID)
	if raw.kinds[colSchemaVersion] == 'n' || !raw.has[colSchemaVersion] {
		row.SchemaVersion = "1.0"
	}
	if !raw.has[colContentType] {
		row.ContentType = "application/json"
	}
	row.Payload = raw.vals[colPayload]
	if raw.kinds[colPayload] == 't' {
		// bytea in text form: \x followed by hex digits.
		p := raw.vals[colPayload]
		if len(p) >= 2 && p[0] == '\\' && p[1] == 'x' {
			out := make([]byte, hex.DecodedLen(len(p)-2))
			if _, err := hex.Decode(out, p[2:]); err != nil {
				bad(fmt.Errorf("payload: %v", err))
			} else {
				row.Payload = out
			}
		}
	}
	if row.Payload == nil {
		row.Payload = []byte{}
	}
	if h := raw.vals[colHeaders]; len(h) > 0 {
		if raw.kinds[colHeaders] == 'b' {
			if h[0] != 1 {
				bad(fmt.Errorf("headers: unknown jsonb version %d", h[0]))
				h = nil
			} else {
				h = h[1:]
			}
		}
		var err error
		if row.Headers, err = decodeHeaders(h); err != nil {
			bad(fmt.Errorf("headers: %w", err))
		}
		row.RawHeaders = h
	}
	var err error
	if row.OccurredAt, row.OccurredAtInf, err = decodeTime(raw.vals[colOccurredAt], raw.kinds[colOccurredAt]); err != nil {
		bad(fmt.Errorf("occurred_at: %w", err))
	}
	if row.CreatedAt, row.CreatedAtInf, err = decodeTime(raw.vals[colCreatedAt], raw.kinds[colCreatedAt]); err != nil {
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
	return outboxschema.DecodeHeaders(h)
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
