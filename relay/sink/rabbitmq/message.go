package rabbitmq

import (
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/sdk/wire"
)

// publishing builds the AMQP message for m: persistent, message_id = event
// id, content_type = datacontenttype, type = event type, timestamp =
// occurred_at, the CloudEvents attributes and the message's headers
// (m.Headers) as application properties (headers). The payload is not copied.
func publishing(m *sink.Message) amqp.Publishing {
	e := m.Event
	attrs := sink.CloudEvents(m)
	h := make(amqp.Table, len(attrs)+len(m.Headers))
	for k, v := range m.Headers {
		if !wire.AMQPReserved(k) {
			h[k] = v
		}
	}
	var id string
	for _, a := range attrs {
		h[wire.AMQPProperty(a.Name)] = a.Value
		if a.Name == sink.CEID {
			id = a.Value
		}
	}
	return amqp.Publishing{
		Headers:      h,
		ContentType:  e.ContentType,
		DeliveryMode: amqp.Persistent,
		MessageId:    id,
		Timestamp:    timestamp(e),
		Type:         e.EventType,
		Body:         e.Payload,
	}
}

// timestamp is the AMQP timestamp property: occurred_at in seconds, absent
// (the zero time) for 'infinity' and '-infinity'; the cloudEvents_time or
// cloudEvents_occurredat property carries the exact value.
func timestamp(e *sink.Event) time.Time {
	if e.OccurredAtInf != pgtype.Finite {
		return time.Time{}
	}
	return e.OccurredAt
}

// route splits a destination into exchange and routing key at the first
// '/': "orders/order.created" publishes to exchange "orders" with routing
// key "order.created"; "/jobs" to the default exchange with routing key
// (queue) "jobs". A destination without '/' is a routing key on
// defaultExchange (Config.Exchange).
func route(dest, defaultExchange string) (exchange, key string) {
	if i := strings.IndexByte(dest, '/'); i >= 0 {
		return dest[:i], dest[i+1:]
	}
	return defaultExchange, dest
}
