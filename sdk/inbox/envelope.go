package inbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"go.opentelemetry.io/otel/propagation"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/pgtime"
	"github.com/outboxrelay/outbox/sdk/wire"
)

// The attributes every outbox event carries, which map to Envelope fields;
// any other attribute (a CloudEvents extension such as traceparent) becomes a
// header.
const (
	attrSpecVersion   = wire.AttrSpecVersion
	attrID            = wire.AttrID
	attrSource        = wire.AttrSource
	attrType          = wire.AttrType
	attrSubject       = wire.AttrSubject
	attrTime          = wire.AttrTime
	attrOccurredAt    = wire.AttrOccurredAt
	attrAggregateType = wire.AttrAggregateType
	attrSchemaVersion = wire.AttrSchemaVersion
	attrTenantID      = wire.AttrTenantID
	// datacontenttype travels in each binding's content-type field (and on
	// NATS and Redis also under its own name).
	attrDataContentType = wire.AttrDataContentType
)

// Redis stream field names for the parts that are not CloudEvents attributes
// (sdk/wire's names, which the relay's Redis sink writes).
const (
	RedisFieldPayload     = wire.RedisPayload
	RedisFieldContentType = wire.RedisContentType
	RedisFieldHeaders     = wire.RedisHeaders
)

// ErrNotAnEvent: the message lacks what every outbox event carries (an id
// that is a UUID, a type) or has a malformed attribute.
var ErrNotAnEvent = errors.New("message is not an outbox event")

// MessageError says what is wrong with a received message.
type MessageError struct {
	// Field is the attribute or header at fault.
	Field  string
	Reason string
}

func (e *MessageError) Error() string {
	return fmt.Sprintf("inbox: message %s: %s", e.Field, e.Reason)
}

// Is reports MessageError as ErrNotAnEvent.
func (e *MessageError) Is(target error) bool { return target == ErrNotAnEvent }

// Envelope is an outbox event as a consumer receives it: the event the
// application wrote (ID, AggregateType, AggregateID, EventType, SchemaVersion,
// Payload, ContentType, TenantID, OccurredAt, and in Headers the trace context
// and every header that is not a CloudEvents attribute) plus the CloudEvents
// attributes the relay adds.
type Envelope struct {
	sdk.Event
	// Source is the CloudEvents source (the relay's `source` setting).
	Source string
	// SpecVersion is the CloudEvents spec version, "1.0".
	SpecVersion string
	// OccurredAtInf is pgtype.Infinity or pgtype.NegativeInfinity when the
	// event's occurred_at is 'infinity' or '-infinity' (OccurredAt is then
	// zero), and pgtype.Finite otherwise. The relay sends such a value, and
	// years outside 0000-9999, in the occurredat attribute instead of time.
	OccurredAtInf pgtype.InfinityModifier
}

// TraceContext returns ctx carrying the remote span context found in the
// message's traceparent/tracestate headers (W3C TraceContext), so the
// consumer's spans join the trace that began in the writing request.
func (e *Envelope) TraceContext(ctx context.Context) context.Context {
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(e.Headers))
}

// builder collects what an adapter found and validates it once.
type builder struct {
	attrs       map[string]string
	contentType string
	payload     []byte
	headers     map[string]string
	msgID       string // a binding's own id field (Nats-Msg-Id, AMQP message-id)
}

func newBuilder() *builder {
	return &builder{attrs: map[string]string{}, headers: map[string]string{}}
}

func (b *builder) header(k, v string) {
	b.headers[k] = v
}

func (b *builder) build() (Envelope, error) {
	var env Envelope
	e := &env.Event
	id := b.attrs[attrID]
	if id == "" {
		id = b.msgID
	}
	if id == "" {
		return env, &MessageError{Field: "id", Reason: "missing"}
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return env, &MessageError{Field: "id", Reason: fmt.Sprintf("%q is not a UUID", id)}
	}
	if b.msgID != "" && b.attrs[attrID] != "" && !strings.EqualFold(b.msgID, b.attrs[attrID]) {
		return env, &MessageError{Field: "id", Reason: fmt.Sprintf("attribute %q and message id %q differ", b.attrs[attrID], b.msgID)}
	}
	e.ID = u
	e.EventType = b.attrs[attrType]
	if e.EventType == "" {
		return env, &MessageError{Field: "type", Reason: "missing"}
	}
	env.SpecVersion = b.attrs[attrSpecVersion]
	if env.SpecVersion != "" && env.SpecVersion != wire.SpecVersion {
		return env, &MessageError{Field: "specversion", Reason: fmt.Sprintf("%q is not %s", env.SpecVersion, wire.SpecVersion)}
	}
	env.Source = b.attrs[attrSource]
	e.AggregateID = b.attrs[attrSubject]
	e.AggregateType = b.attrs[attrAggregateType]
	e.SchemaVersion = orDefault(b.attrs[attrSchemaVersion], sdk.DefaultSchemaVersion)
	if _, _, err := sdk.ParseSchemaVersion(e.SchemaVersion); err != nil {
		return env, &MessageError{Field: "schemaversion", Reason: err.Error()}
	}
	e.TenantID = b.attrs[attrTenantID]
	if t := b.attrs[attrTime]; t != "" {
		ts, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return env, &MessageError{Field: "time", Reason: fmt.Sprintf("%q is not an RFC 3339 timestamp", t)}
		}
		e.OccurredAt = ts
	} else if t := b.attrs[attrOccurredAt]; t != "" {
		ts, inf, err := pgtime.Parse(t)
		if err != nil {
			return env, &MessageError{Field: attrOccurredAt, Reason: err.Error()}
		}
		e.OccurredAt, env.OccurredAtInf = ts, inf
	}
	// The binding's content-type field, else a datacontenttype attribute
	// (which the Kafka and AMQP bindings do not use, but a producer may
	// send), else the default.
	e.ContentType = orDefault(orDefault(b.contentType, b.attrs[attrDataContentType]), sdk.DefaultContentType)
	e.Payload = b.payload
	// Other attributes (CloudEvents extensions such as the distributed
	// tracing extension's traceparent) become headers under their own
	// name, unless a plain header of that name was present.
	for k, v := range b.attrs {
		switch k {
		case attrSpecVersion, attrID, attrSource, attrType, attrSubject, attrTime, attrOccurredAt, attrAggregateType, attrSchemaVersion, attrTenantID, attrDataContentType:
			continue
		}
		if _, set := b.headers[k]; !set {
			b.headers[k] = v
		}
	}
	if len(b.headers) > 0 {
		e.Headers = b.headers
	}
	return env, nil
}

func orDefault(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// KafkaHeader is one Kafka record header. kafka-go's kafka.Header,
// franz-go's kgo.RecordHeader and sarama's RecordHeader convert to it
// directly: inbox.KafkaHeader(h).
type KafkaHeader struct {
	Key   string
	Value []byte
}

// FromKafka reads an event from a Kafka record in CloudEvents binary mode, as
// the relay writes it (sdk/wire): attributes in "ce_<name>" headers, the
// content type in "content-type", the payload as the record value; every
// other header (traceparent, tracestate, the application's) goes to Headers.
func FromKafka(headers []KafkaHeader, value []byte) (Envelope, error) {
	b := newBuilder()
	b.payload = value
	for _, h := range headers {
		if attr, ok := wire.KafkaAttr(h.Key); ok {
			b.attrs[attr] = string(h.Value)
		} else if strings.EqualFold(h.Key, wire.KafkaContentType) {
			b.contentType = string(h.Value)
		} else {
			b.header(h.Key, string(h.Value))
		}
	}
	return b.build()
}

// FromNATS reads an event from a NATS message in CloudEvents binary mode, as
// the relay writes it (sdk/wire): attributes in "ce-<name>" headers with
// percent-encoded values, the content type in "ce-datacontenttype" (or, from
// other producers, "Content-Type"), the id also in "Nats-Msg-Id" (JetStream's
// dedupe id), the payload as the data. header is the message's nats.Header (a
// map[string][]string); header names are matched without regard to case.
// JetStream's own Nats-* headers are not copied into Headers. An attribute
// value that is not valid percent-encoding is taken as it is.
func FromNATS(header map[string][]string, data []byte) (Envelope, error) {
	b := newBuilder()
	b.payload = data
	var plainContentType string
	for k, vs := range header {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		switch attr, isAttr := wire.NATSAttr(k); {
		case isAttr:
			if dv, err := wire.NATSDecode(v); err == nil {
				v = dv
			}
			if attr == attrDataContentType {
				b.contentType = v
			} else {
				b.attrs[attr] = v
			}
		case strings.EqualFold(k, wire.NATSContentType):
			plainContentType = v
		case strings.EqualFold(k, wire.NATSMsgID):
			b.msgID = v
		case wire.NATSReserved(k): // JetStream's own headers
		default:
			b.header(k, v)
		}
	}
	if b.contentType == "" {
		b.contentType = plainContentType
	}
	return b.build()
}

// AMQPMessage is what FromAMQP needs of an AMQP delivery. From amqp091-go:
//
//	inbox.AMQPMessage{Headers: d.Headers, ContentType: d.ContentType, MessageID: d.MessageId, Body: d.Body}
type AMQPMessage struct {
	// Headers are the application properties (amqp091.Table).
	Headers     map[string]any
	ContentType string
	MessageID   string
	Body        []byte
}

// FromAMQP reads an event from an AMQP message in CloudEvents binary mode, as
// the relay writes it (sdk/wire): attributes in application properties named
// "cloudEvents_<name>" (the binding's preferred form, which JMS selectors
// accept) or "cloudEvents:<name>" (its older form), the content type and
// message id in the message properties, the payload as the body; every other
// application property goes to Headers.
func FromAMQP(m AMQPMessage) (Envelope, error) {
	b := newBuilder()
	b.payload = m.Body
	b.contentType = m.ContentType
	b.msgID = m.MessageID
	for k, raw := range m.Headers {
		v, err := amqpString(raw)
		if err != nil {
			return Envelope{}, &MessageError{Field: k, Reason: err.Error()}
		}
		if attr, isAttr := wire.AMQPAttr(k); isAttr {
			b.attrs[attr] = v
		} else {
			b.header(k, v)
		}
	}
	return b.build()
}

// amqpString renders an application property value as the attribute's
// canonical string: the binding allows native AMQP types (a timestamp for
// time, for example) as well as strings.
func amqpString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case bool, int, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64:
		return fmt.Sprint(x), nil
	case fmt.Stringer:
		return x.String(), nil
	}
	return "", fmt.Errorf("value of type %T is not a string", v)
}

// FromRedis reads an event from a Redis stream entry as the relay writes it
// (sdk/wire): one field per CloudEvents attribute, named exactly like the
// attribute (id, specversion, type, source, subject, time, aggregatetype,
// schemaversion, tenantid), "datacontenttype", "headers" (the event headers,
// traceparent and tracestate among them, as one JSON object of strings;
// absent when there are none) and "payload" (the exact bytes). values is the
// entry's field map (go-redis XMessage.Values), with string or []byte values.
// Any other field is taken for a CloudEvents extension attribute and, like
// those of the other bindings, goes to Headers unless the headers field has
// that name.
func FromRedis(values map[string]any) (Envelope, error) {
	b := newBuilder()
	for k, raw := range values {
		var v string
		switch x := raw.(type) {
		case string:
			v = x
		case []byte:
			v = string(x)
		default:
			return Envelope{}, &MessageError{Field: k, Reason: fmt.Sprintf("value of type %T is not a string", raw)}
		}
		switch k {
		case wire.RedisPayload:
			b.payload = []byte(v)
		case wire.RedisContentType:
			b.contentType = v
		case wire.RedisHeaders:
			h, err := wire.RedisDecodeHeaders([]byte(v))
			if err != nil {
				return Envelope{}, &MessageError{Field: k, Reason: err.Error()}
			}
			for hk, hv := range h {
				b.header(hk, hv)
			}
		default:
			b.attrs[k] = v
		}
	}
	if _, ok := values[wire.RedisPayload]; !ok {
		return Envelope{}, &MessageError{Field: wire.RedisPayload, Reason: "missing"}
	}
	return b.build()
}
