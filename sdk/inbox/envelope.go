package inbox

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"

	"github.com/outboxrelay/outbox/sdk"
)

// CloudEvents attribute names as the relay writes them (relay.CloudEvents):
// CloudEvents 1.0 context attributes plus the outbox's extensions. Each
// binding adds its prefix.
const (
	attrSpecVersion   = "specversion"
	attrID            = "id"
	attrSource        = "source"
	attrType          = "type"
	attrSubject       = "subject"
	attrTime          = "time"
	attrAggregateType = "aggregatetype"
	attrSchemaVersion = "schemaversion"
	attrTenantID      = "tenantid"
	// datacontenttype travels in each binding's own content-type field,
	// except in Redis streams, which have no such field.
)

// Redis stream field names for the parts that are not CloudEvents attributes.
const (
	RedisFieldPayload     = "payload"
	RedisFieldContentType = "content_type"
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
	if env.SpecVersion != "" && env.SpecVersion != "1.0" {
		return env, &MessageError{Field: "specversion", Reason: fmt.Sprintf("%q is not 1.0", env.SpecVersion)}
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
	}
	e.ContentType = orDefault(b.contentType, sdk.DefaultContentType)
	e.Payload = b.payload
	// Other attributes (CloudEvents extensions such as the distributed
	// tracing extension's traceparent) become headers under their own
	// name, unless a plain header of that name was present.
	for k, v := range b.attrs {
		switch k {
		case attrSpecVersion, attrID, attrSource, attrType, attrSubject, attrTime, attrAggregateType, attrSchemaVersion, attrTenantID:
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
// the relay writes it: attributes in "ce_<name>" headers, the content type in
// "content-type", the payload as the record value.
func FromKafka(headers []KafkaHeader, value []byte) (Envelope, error) {
	b := newBuilder()
	b.payload = value
	for _, h := range headers {
		k := strings.ToLower(h.Key)
		switch {
		case strings.HasPrefix(k, "ce_"):
			b.attrs[k[3:]] = string(h.Value)
		case k == "content-type":
			b.contentType = string(h.Value)
		default:
			b.header(h.Key, string(h.Value))
		}
	}
	return b.build()
}

// FromNATS reads an event from a NATS message in CloudEvents binary mode, as
// the relay writes it: attributes in "ce-<name>" headers, the content type in
// "Content-Type", the id also in "Nats-Msg-Id" (JetStream's dedupe id), the
// payload as the data. header is the message's nats.Header (a
// map[string][]string); JetStream's own Nats-* headers are not copied into
// Headers.
func FromNATS(header map[string][]string, data []byte) (Envelope, error) {
	b := newBuilder()
	b.payload = data
	for k, vs := range header {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		lk := strings.ToLower(k)
		switch {
		case lk == "ce-datacontenttype":
			if dv, err := url.PathUnescape(v); err == nil {
				b.contentType = dv
			}
		case strings.HasPrefix(lk, "ce-"):
			// The NATS binding percent-encodes attribute values.
			if dv, err := url.PathUnescape(v); err == nil {
				v = dv
			}
			b.attrs[lk[3:]] = v
		case lk == "content-type":
			if b.contentType == "" {
				b.contentType = v
			}
		case lk == "nats-msg-id":
			b.msgID = v
		case strings.HasPrefix(lk, "nats-"):
		default:
			b.header(k, v)
		}
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

// FromAMQP reads an event from an AMQP message in CloudEvents binary mode:
// attributes in application properties named "cloudEvents_<name>" (the
// binding's preferred form, which JMS selectors accept) or "cloudEvents:<name>"
// (its older form), the content type and message id in the message
// properties, the payload as the body.
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
		name, isAttr := strings.CutPrefix(k, "cloudEvents_")
		if !isAttr {
			name, isAttr = strings.CutPrefix(k, "cloudEvents:")
		}
		if isAttr {
			b.attrs[strings.ToLower(name)] = v
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

// FromRedis reads an event from a Redis stream entry as the relay writes it:
// one field per CloudEvents attribute, named exactly like the attribute (id,
// type, source, specversion, subject, time, aggregatetype, schemaversion,
// tenantid), plus "payload" and "content_type"; any other field (traceparent,
// tracestate, user headers) goes to Headers. values is the entry's field map
// (go-redis XMessage.Values), with string or []byte values.
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
		case RedisFieldPayload:
			b.payload = []byte(v)
		case RedisFieldContentType:
			b.contentType = v
		case attrSpecVersion, attrID, attrSource, attrType, attrSubject, attrTime, attrAggregateType, attrSchemaVersion, attrTenantID:
			b.attrs[k] = v
		default:
			b.header(k, v)
		}
	}
	if _, ok := values[RedisFieldPayload]; !ok {
		return Envelope{}, &MessageError{Field: RedisFieldPayload, Reason: "missing"}
	}
	return b.build()
}
