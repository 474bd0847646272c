package sink

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// Event is one row of the outbox events table as the relay read it from the
// replication stream. Payload is passed through as the exact bytes the
// application wrote; nothing in the relay decodes it except CEL filters that
// ask for it.
type Event struct {
	ID            uuid.UUID
	AggregateType string
	AggregateID   string
	EventType     string
	SchemaVersion string
	Payload       []byte
	ContentType   string
	// Headers holds traceparent, tracestate and the application's own headers.
	Headers  map[string]string
	TenantID string // empty when the row's tenant_id is NULL
	// OccurredAt and CreatedAt are the row's timestamps in UTC, of any year
	// PostgreSQL stores (4713 BC to 294276), to the microsecond. See
	// OccurredAtInf and CreatedAtInf for 'infinity'.
	OccurredAt time.Time
	CreatedAt  time.Time
	// OccurredAtInf and CreatedAtInf are pgtype.Infinity or
	// pgtype.NegativeInfinity when the column holds 'infinity' or
	// '-infinity' (time.Time has none: OccurredAt or CreatedAt is then the
	// zero time), and pgtype.Finite otherwise. CloudEvents carries
	// occurred_at losslessly either way (see CloudEvents).
	OccurredAtInf pgtype.InfinityModifier
	CreatedAtInf  pgtype.InfinityModifier

	// CommitTime is when the writing transaction committed (from pgoutput's
	// Begin message); zero for rows read from a snapshot.
	CommitTime time.Time
	// CommitLSN is the LSN of the writing transaction's commit record; zero for
	// rows read from a snapshot.
	CommitLSN LSN

	// DecodeErr is set by the relay when a value of the row (a header, a
	// timestamp, the payload's text form) could not be decoded. The relay
	// dead-letters such an event, with this reason, on every route that
	// takes it: a sink is never given one.
	DecodeErr error
	// RawHeaders is the headers column's JSON as the relay read it, so that
	// a dead letter copies it exactly (Headers keeps non-string values as
	// their JSON text, and a row whose headers cannot be decoded has none).
	RawHeaders []byte
}

// LSN is a position in PostgreSQL's write-ahead log.
type LSN uint64

// String formats the LSN as PostgreSQL does, e.g. "16/B374D848".
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l))
}

// Key is the ordering key: events with the same key are delivered to a route in
// commit order.
func (e *Event) Key() string {
	return e.AggregateType + ":" + e.AggregateID
}

// Message is one event addressed to one destination of one sink.
type Message struct {
	Event *Event
	// Route is the name of the route that matched.
	Route string
	// Destination is the route's rendered destination: a subject, topic,
	// exchange/routing key or stream, as the sink understands it.
	Destination string
	// Source is the CloudEvents source attribute (the relay's `source` setting).
	Source string
	// Headers are the headers to send with the message: the event's own
	// headers, with traceparent and tracestate set to the relay's delivery span
	// when tracing is on. Sinks send these, not Event.Headers.
	Headers map[string]string
	// Attempt counts deliveries of this message to this route, from 1.
	Attempt int
}
