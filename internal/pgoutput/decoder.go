package pgoutput

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// Kind is what a message was, for the caller.
type Kind uint8

const (
	// Skip is a message with nothing for the caller: a type or origin
	// message, a row of another table, a keepalive that asks for no reply.
	Skip Kind = iota
	// Begin starts a transaction (Tx has its commit time and LSN).
	Begin
	// Insert is a row of the outbox's events table, decoded into the Row
	// passed in.
	Insert
	// Commit ends the transaction (Tx has its end LSN).
	Commit
	// Foreign is a Relation message for a table that is not the outbox's
	// events table (the publication includes it): its rows are skipped.
	// ForeignTable names it.
	Foreign
	// StatusRequested is a keepalive that asks for a status update now.
	StatusRequested
)

// Tx is the transaction a stream is in, from its Begin message to its
// Commit.
type Tx struct {
	// CommitTime is when the transaction committed.
	CommitTime time.Time
	// CommitLSN is the LSN of its commit record.
	CommitLSN pglogrepl.LSN
	// EndLSN, set at Commit, is the end of the commit record: the slot may
	// be confirmed up to it once every event of the transaction, and of
	// every one before it, is handled.
	EndLSN pglogrepl.LSN
}

// Decoder decodes pgoutput messages (protocol 1: the WAL data of XLogData
// messages) into the transactions of the outbox's events. It keeps the
// relations the stream announced; it is not safe for concurrent use.
type Decoder struct {
	schema  string
	rels    map[uint32]*relation
	tx      Tx
	inTx    bool
	foreign string
}

// NewDecoder returns a Decoder of the events table in schema.
func NewDecoder(schema string) *Decoder {
	return &Decoder{schema: schema, rels: map[uint32]*relation{}}
}

// Tx is the transaction the last Begin started (with its end LSN once its
// Commit was decoded).
func (d *Decoder) Tx() Tx { return d.tx }

// ForeignTable names the table of the last Foreign message.
func (d *Decoder) ForeignTable() string { return d.foreign }

// Decode decodes one message. For an Insert it fills row, whose strings and
// payload point into a copy of msg (msg may be reused afterwards). An error
// means the message is malformed or out of place; a value of the row that
// cannot be decoded sets row.Err instead.
//
// Protocol 1 sends a transaction only after it committed, and never streams
// one in progress: the messages of a streamed transaction (stream start,
// stop, commit, abort) are errors, and so are inserts outside a transaction
// and a commit without a begin.
func (d *Decoder) Decode(msg []byte, row *Row) (Kind, error) {
	if len(msg) == 0 {
		return Skip, nil
	}
	switch msg[0] {
	case 'B':
		var b pglogrepl.BeginMessage
		if err := parse(&b, msg[1:]); err != nil {
			return Skip, fmt.Errorf("begin: %w", err)
		}
		d.tx, d.inTx = Tx{CommitTime: b.CommitTime, CommitLSN: b.FinalLSN}, true
		return Begin, nil
	case 'C':
		var c pglogrepl.CommitMessage
		if err := parse(&c, msg[1:]); err != nil {
			return Skip, fmt.Errorf("commit: %w", err)
		}
		if !d.inTx {
			return Skip, errors.New("commit without begin")
		}
		d.tx.EndLSN, d.inTx = c.TransactionEndLSN, false
		return Commit, nil
	case 'R':
		return d.relation(msg)
	case 'I':
		return d.insert(msg, row)
	case 'S', 'E', 'c', 'A':
		return Skip, fmt.Errorf("%w: a message of a streamed transaction (%q), which protocol 1 never sends: start replication with proto_version '1' and no streaming option", ErrDecode, msg[0])
	}
	return Skip, nil
}

// parse decodes a message with pglogrepl, turning the panic it raises on a
// truncated message (it indexes past the end of a Relation message's
// columns, found by FuzzDecoder) into an error: a malformed message must
// end the session with a reason, not crash the relay.
func parse(m interface{ Decode([]byte) error }, b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: malformed message (%v)", ErrDecode, r)
		}
	}()
	return m.Decode(b)
}

func (d *Decoder) relation(msg []byte) (Kind, error) {
	var rel pglogrepl.RelationMessage
	if err := parse(&rel, msg[1:]); err != nil {
		return Skip, fmt.Errorf("relation: %w", err)
	}
	if rel.Namespace != d.schema || rel.RelationName != "events" {
		d.foreign = rel.Namespace + "." + rel.RelationName
		return Foreign, nil
	}
	m, err := newRelation(&rel)
	if err != nil {
		return Skip, err
	}
	d.rels[rel.RelationID] = m
	return Skip, nil
}

func (d *Decoder) insert(msg []byte, row *Row) (Kind, error) {
	if !d.inTx {
		return Skip, errors.New("insert outside a transaction")
	}
	if len(msg) >= 5 {
		if _, ok := d.rels[binary.BigEndian.Uint32(msg[1:])]; !ok {
			return Skip, nil // a table that is not ours
		}
	}
	buf := bytes.Clone(msg) // the connection reuses its read buffer
	if err := decodeInsert(buf, d.rels, row); err != nil {
		return Skip, err
	}
	row.CommitTime, row.CommitLSN = d.tx.CommitTime, d.tx.CommitLSN
	return Insert, nil
}

// relation maps the events table's column positions, learnt from pgoutput's
// Relation message, to the columns of a Row.
type relation struct {
	index [numCols]int // position in the tuple of each column, -1 if absent
}

func newRelation(rel *pglogrepl.RelationMessage) (*relation, error) {
	m := &relation{}
	for i := range m.index {
		m.index[i] = -1
	}
	for pos, c := range rel.Columns {
		for i, name := range columns {
			if c.Name == name {
				m.index[i] = pos
			}
		}
	}
	for _, req := range []int{colID, colAggregateType, colAggregateID, colEventType, colPayload} {
		if m.index[req] < 0 {
			return nil, fmt.Errorf("%w: table %s.%s has no column %q: is it the outbox events table? (run `outbox migrate up`)", ErrNotOutbox, rel.Namespace, rel.RelationName, columns[req])
		}
	}
	return m, nil
}

// decodeInsert decodes a pgoutput Insert message (the XLogData payload whose
// first byte is 'I') into row. buf must not be modified afterwards: the row's
// strings and payload point into it. An error means the message itself is
// malformed; a value of the row that cannot be decoded is recorded in the
// row instead (see rawRow.decode).
func decodeInsert(buf []byte, rels map[uint32]*relation, row *Row) error {
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
	var raw rawRow
	for i, p := range rel.index {
		raw.has[i] = p >= 0
		raw.kinds[i] = 'n'
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
				raw.vals[i], raw.kinds[i] = data, kind
			}
		}
	}
	return raw.decode(row)
}
