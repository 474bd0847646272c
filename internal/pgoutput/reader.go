package pgoutput

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// StartOptions say what to stream.
type StartOptions struct {
	// Slot is the logical replication slot (plugin pgoutput).
	Slot string
	// Publication names the tables the slot sends (the outbox's events
	// table, and perhaps others, whose rows are skipped).
	Publication string
	// Schema is the outbox's schema: only rows of Schema.events are read.
	Schema string
	// Start is the position to stream from: the slot's confirmed position,
	// or its consistent point when just created.
	Start pglogrepl.LSN
}

// PluginArgs are the options the relay passes pgoutput: protocol 1 (a
// transaction is sent once it committed, never in progress), values in
// binary (payloads as raw bytes), the publication.
func PluginArgs(publication string) []string {
	return []string{
		"proto_version '1'",
		fmt.Sprintf("publication_names '%s'", publication),
		"binary 'true'",
	}
}

// Reader reads the outbox's transactions from a replication connection:
// Start runs START_REPLICATION on it, and Next reads one message at a time.
// It is not safe for concurrent use.
type Reader struct {
	conn      *pgconn.PgConn
	dec       *Decoder
	serverEnd pglogrepl.LSN
}

// Start starts streaming the slot on conn, a connection opened with
// replication=database, and returns a Reader of the stream.
func Start(ctx context.Context, conn *pgconn.PgConn, o StartOptions) (*Reader, error) {
	err := pglogrepl.StartReplication(ctx, conn, o.Slot, o.Start, pglogrepl.StartReplicationOptions{PluginArgs: PluginArgs(o.Publication)})
	if err != nil {
		return nil, fmt.Errorf("start replication: %w", err)
	}
	return &Reader{conn: conn, dec: NewDecoder(o.Schema), serverEnd: o.Start}, nil
}

// Next reads the next message of the stream. For an Insert it fills row.
// Reads wait on the connection's read deadline (conn.Conn().SetReadDeadline),
// not on a context, which costs a goroutine hand-off per message; a read
// that reaches the deadline returns an error for which pgconn.Timeout
// reports true, and Next may be called again.
func (r *Reader) Next(row *Row) (Kind, error) {
	raw, err := r.conn.ReceiveMessage(context.Background())
	if err != nil {
		return Skip, fmt.Errorf("replication stream: %w", err)
	}
	var cd *pgproto3.CopyData
	switch m := raw.(type) {
	case *pgproto3.CopyData:
		cd = m
	case *pgproto3.ErrorResponse:
		return Skip, fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
	case *pgproto3.CopyDone:
		return Skip, errors.New("replication stream: the server ended the stream")
	default:
		return Skip, nil
	}
	if len(cd.Data) == 0 {
		return Skip, nil
	}
	switch cd.Data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
		if err != nil {
			return Skip, fmt.Errorf("replication stream: %w", err)
		}
		r.serverEnd = max(r.serverEnd, pkm.ServerWALEnd)
		if pkm.ReplyRequested {
			return StatusRequested, nil
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			return Skip, fmt.Errorf("replication stream: %w", err)
		}
		kind, err := r.dec.Decode(xld.WALData, row)
		if err != nil {
			return Skip, fmt.Errorf("replication stream at %s: %w", xld.WALStart, err)
		}
		if kind == Commit {
			r.serverEnd = max(r.serverEnd, r.dec.tx.EndLSN)
		}
		return kind, nil
	}
	return Skip, nil
}

// Tx is the transaction being read (see Decoder.Tx).
func (r *Reader) Tx() Tx { return r.dec.Tx() }

// ForeignTable names the table of the last Foreign message.
func (r *Reader) ForeignTable() string { return r.dec.ForeignTable() }

// ServerEnd is the latest WAL position the server said it has sent (its
// keepalives, the end of the last commit). When no transaction is open or
// pending, everything up to it has been read.
func (r *Reader) ServerEnd() pglogrepl.LSN { return r.serverEnd }

// Confirm reports pos to the server as written, flushed and applied: the
// slot's confirmed position moves to it, and PostgreSQL may recycle the WAL
// before it. Confirm only what has been fully handled.
func (r *Reader) Confirm(ctx context.Context, pos pglogrepl.LSN) error {
	err := pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos, ClientTime: time.Now()})
	if err != nil {
		return fmt.Errorf("replication status update: %w", err)
	}
	return nil
}
