// Package pgoutputtest builds pgoutput protocol 1 messages (the WAL data of
// XLogData messages) for tests and benchmarks of their readers.
package pgoutputtest

import (
	"encoding/binary"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// Col is one column of an Insert: Kind 'b' (binary), 't' (text), 'n'
// (NULL) or 'u' (unchanged TOAST value).
type Col struct {
	Kind byte
	Data []byte
}

// Insert is an Insert message of relation relID.
func Insert(relID uint32, cols []Col) []byte {
	b := []byte{'I'}
	b = binary.BigEndian.AppendUint32(b, relID)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, c.Kind)
		if c.Kind == 'b' || c.Kind == 't' {
			b = binary.BigEndian.AppendUint32(b, uint32(len(c.Data)))
			b = append(b, c.Data...)
		}
	}
	return b
}

// Relation is a Relation message announcing table schema.table as relID with
// the given columns.
func Relation(relID uint32, schema, table string, cols []string) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, relID)
	b = append(append(b, schema...), 0)
	b = append(append(b, table...), 0)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, 0)
		b = append(append(b, c...), 0)
		b = binary.BigEndian.AppendUint32(b, 25) // text
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	return b
}

// EventsRelation is the Relation message of schema's events table: the
// event's columns, then delivered_at.
func EventsRelation(relID uint32, schema string) []byte {
	return Relation(relID, schema, "events", append(outboxschema.ColumnNames(outboxschema.EventColumns), "delivered_at"))
}

// Begin is the Begin message of a transaction whose commit record is at
// final.
func Begin(final pglogrepl.LSN, at time.Time) []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, uint64(final))
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixMicro()-946_684_800_000_000))
	return binary.BigEndian.AppendUint32(b, 42) // xid
}

// Commit is the Commit message of a transaction whose commit record is at
// commit and ends at end.
func Commit(commit, end pglogrepl.LSN) []byte {
	b := []byte{'C', 0}
	b = binary.BigEndian.AppendUint64(b, uint64(commit))
	b = binary.BigEndian.AppendUint64(b, uint64(end))
	return binary.BigEndian.AppendUint64(b, 0)
}

// Micros is a timestamptz in binary: microseconds since 2000-01-01 UTC.
func Micros(t time.Time) []byte {
	us := (t.Unix()-946_684_800)*1_000_000 + int64(t.Nanosecond()/1000)
	return binary.BigEndian.AppendUint64(nil, uint64(us))
}

// SampleInsert is an Insert of an events row of relation relID (announced
// with EventsRelation) in binary, with headers of a hand-written row (a
// string and a number).
func SampleInsert(relID uint32) []byte {
	id := uuid.MustParse("01a21c35-69ed-7291-9412-bbf9bec8f345")
	at := Micros(time.Date(2026, 11, 27, 8, 0, 0, 123456000, time.UTC))
	return Insert(relID, []Col{
		{'b', id[:]}, {'b', []byte("order")}, {'b', []byte("42")}, {'b', []byte("order.created")}, {'b', []byte("1.2")},
		{'b', []byte(`{"total":5}`)}, {'b', []byte("application/json")}, {'b', append([]byte{1}, `{"traceparent": "00-abc", "n": 5}`...)},
		{'n', nil}, {'b', at}, {'b', at}, {'n', nil},
	})
}
