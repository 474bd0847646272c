package rabbitmq

import (
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outboxrelay/outbox/relay/sink"
)

// What RabbitMQ refuses by closing the whole connection (every channel, every
// message in flight on it), checked before a message is sent so that one
// event cannot stall the sink: the sink fails such a message permanently, as
// a *FieldError, and the relay dead-letters it with the reason.
//
//   - AMQP short strings (the exchange, the routing key, the content_type
//     and type properties, the names of application properties; message_id
//     is the event id, always short ASCII)
//     hold at most 255 bytes of UTF-8. RabbitMQ closes the connection with
//     "FRAME_ERROR - Malformed UTF-8 in shortstr" for an exchange name that
//     is not UTF-8 (checked by the passive declare before publishing), and
//     amqp091-go closes it for a short string over 255 bytes. NUL and other
//     control characters are valid UTF-8 and pass.
//   - The message's properties and application properties travel in one
//     content header frame, which may not exceed the connection's frame_max
//     (131072 bytes by default): RabbitMQ closes the connection with
//     "FRAME_ERROR ... frame_too_large" otherwise. The body is split into
//     frames and has no such limit (see Config.MaxMessageBytes).

// shortstrMax is the longest AMQP short string, in bytes.
const shortstrMax = 255

// frameOverhead is what a frame adds to its payload: type (1), channel (2),
// size (4) and the frame-end octet (1).
const frameOverhead = 8

// FieldError reports a message field AMQP 0-9-1 cannot carry: a short string
// that is not UTF-8 or is longer than 255 bytes, or properties and headers
// larger than a frame. The sink fails the message permanently before sending
// it (RabbitMQ would close the connection). Field names the field, e.g.
// "exchange" or `header name "x-..."`.
type FieldError struct {
	ID     string // the event id
	Field  string
	Reason string
	Hint   string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("rabbitmq: event %s: %s: %s (%s)", e.ID, e.Field, e.Reason, e.Hint)
}

const hintDestination = "fix the route's destination, or the event fields its template renders"

// checkPublishing returns a permanent *FieldError when RabbitMQ or amqp091-go
// would refuse to send p to exchange with routing key by closing the
// connection. frameMax is the connection's negotiated frame_max (0: none).
func checkPublishing(id, exchange, key string, p *amqp.Publishing, frameMax int) error {
	for _, f := range []struct{ field, value, hint string }{
		{"exchange", exchange, hintDestination},
		{"routing key", key, hintDestination},
		{"content_type", p.ContentType, "fix the event's content_type"},
		{"type (the event type)", p.Type, "fix the event's event_type"},
	} {
		if reason := shortstrProblem(f.value); reason != "" {
			return sink.MarkPermanent(&FieldError{ID: id, Field: fmt.Sprintf("%s %s", f.field, quote(f.value)), Reason: reason, Hint: f.hint})
		}
	}
	var bad []string
	for k := range p.Headers {
		if shortstrProblem(k) != "" {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad) // the same error for the same event on every attempt
		reason := shortstrProblem(bad[0])
		if len(bad) > 1 {
			reason += fmt.Sprintf(" (and %d more header names)", len(bad)-1)
		}
		return sink.MarkPermanent(&FieldError{ID: id, Field: "header name " + quote(bad[0]), Reason: reason,
			Hint: "AMQP application property names are short strings: rename the header in the event, or route the event to another sink"})
	}
	if limit := frameMax - frameOverhead; frameMax > 0 && headerFrameSize(p) > limit {
		return sink.MarkPermanent(&FieldError{ID: id, Field: fmt.Sprintf("properties and %d headers", len(p.Headers)),
			Reason: fmt.Sprintf("%d bytes, over the %d a content header frame holds on this connection (frame_max %d)", headerFrameSize(p), limit, frameMax),
			Hint:   "send fewer or smaller headers with the event, or raise RabbitMQ's frame_max"})
	}
	return nil
}

// shortstrProblem says why s cannot be an AMQP short string, or "".
func shortstrProblem(s string) string {
	if len(s) > shortstrMax {
		return fmt.Sprintf("%d bytes, over the %d an AMQP short string holds", len(s), shortstrMax)
	}
	if !utf8.ValidString(s) {
		i := 0
		for i < len(s) {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			i += n
		}
		return fmt.Sprintf("not valid UTF-8 (byte 0x%02x at offset %d), which an AMQP short string must be", s[i], i)
	}
	return ""
}

// quote quotes s for an error, cut to 80 bytes.
func quote(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%q…", s[:80])
	}
	return fmt.Sprintf("%q", s)
}

// headerFrameSize is the size of the content header frame's payload that
// amqp091-go writes for p: class id, weight, body size and property flags,
// then each property that is set.
func headerFrameSize(p *amqp.Publishing) int {
	n := 2 + 2 + 8 + 2
	str := func(s string) {
		if s != "" {
			n += 1 + len(s)
		}
	}
	str(p.ContentType)
	str(p.ContentEncoding)
	if len(p.Headers) > 0 {
		n += tableSize(p.Headers)
	}
	if p.DeliveryMode > 0 {
		n++
	}
	if p.Priority > 0 {
		n++
	}
	str(p.CorrelationId)
	str(p.ReplyTo)
	str(p.Expiration)
	str(p.MessageId)
	if !p.Timestamp.IsZero() {
		n += 8
	}
	str(p.Type)
	str(p.UserId)
	str(p.AppId)
	return n
}

// tableSize is the encoded size of a field table, its length prefix
// included.
func tableSize(t amqp.Table) int {
	n := 4
	for k, v := range t {
		n += 1 + len(k) + fieldSize(v)
	}
	return n
}

// fieldSize is the encoded size of a field value, its type octet included,
// as amqp091-go writes it (0 for a type it refuses).
func fieldSize(v any) int {
	switch v := v.(type) {
	case string:
		return 1 + 4 + len(v)
	case []byte:
		return 1 + 4 + len(v)
	case nil:
		return 1
	case bool, byte, int8:
		return 2
	case int16, uint16:
		return 3
	case int, int32, uint32, float32:
		return 5
	case amqp.Decimal:
		return 6
	case int64, float64, time.Time:
		return 9
	case amqp.Table:
		return 1 + tableSize(v)
	case []any:
		n := 1 + 4
		for _, e := range v {
			n += fieldSize(e)
		}
		return n
	}
	return 0
}
