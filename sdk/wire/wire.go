// Package wire is the outbox's message format on each broker: the names of the
// CloudEvents attributes every event carries, and for Kafka, NATS, AMQP and
// Redis Streams the headers, properties or fields that carry them, the content
// type, the event id and the event's own headers (traceparent, tracestate, the
// application's).
//
// The relay's sinks write messages with these names and the SDK's inbox
// adapters (inbox.FromKafka, FromNATS, FromAMQP, FromRedis) read them back with
// the same names, so the two cannot drift apart. The package depends on the
// standard library only, so that both the relay and the SDK can import it.
// docs/cloudevents.md describes the format in full.
//
// Every binding but Redis prefixes attribute names ("ce_id" on Kafka); an
// event header whose name a reader would take for an attribute or for the
// content type is reserved: the sinks leave it out (KafkaReserved,
// NATSReserved, AMQPReserved). On Redis the event headers travel in one JSON
// field, so no header name can collide with an attribute.
package wire

import (
	"encoding/json"
	"fmt"
	"strings"
)

// SpecVersion is the CloudEvents version of every message.
const SpecVersion = "1.0"

// CloudEvents context attribute names, without a binding's prefix.
const (
	AttrSpecVersion     = "specversion"
	AttrID              = "id"
	AttrSource          = "source"
	AttrType            = "type"
	AttrSubject         = "subject"
	AttrTime            = "time"
	AttrDataContentType = "datacontenttype"
	AttrDataSchema      = "dataschema"
	// Extensions the outbox adds (lower-case alphanumerics, as CloudEvents
	// requires of extension names).
	AttrAggregateType = "aggregatetype"
	AttrSchemaVersion = "schemaversion"
	AttrTenantID      = "tenantid"
	// AttrOccurredAt carries occurred_at instead of time when RFC 3339
	// cannot hold it: "infinity", "-infinity", or a year outside 0000-9999
	// written with a sign and six year digits ("+294276-12-31T23:59:59.999999Z").
	AttrOccurredAt = "occurredat"
)

// attrs are the attributes a binding's name functions answer without
// allocating.
var attrs = []string{AttrSpecVersion, AttrID, AttrSource, AttrType, AttrSubject, AttrTime,
	AttrDataContentType, AttrDataSchema, AttrAggregateType, AttrSchemaVersion, AttrTenantID, AttrOccurredAt}

// prefixed maps each attribute in attrs to prefix+attribute.
func prefixed(prefix string) map[string]string {
	m := make(map[string]string, len(attrs))
	for _, a := range attrs {
		m[a] = prefix + a
	}
	return m
}

func name(names map[string]string, prefix, attr string) string {
	if n, ok := names[attr]; ok {
		return n
	}
	return prefix + attr
}

// cutPrefixFold is strings.CutPrefix ignoring ASCII case; the attribute name
// after the prefix is returned in lower case (CloudEvents attribute names are
// lower case).
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) <= len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return strings.ToLower(s[len(prefix):]), true
}

// Kafka: the CloudEvents Kafka protocol binding, binary content mode.
// Attributes are record headers "ce_<attribute>", datacontenttype is the
// "content-type" header, the event headers are record headers under their
// own names, the payload is the record value and the record key is the
// ordering key ("aggregatetype:subject").
const (
	KafkaAttrPrefix  = "ce_"
	KafkaContentType = "content-type"
)

var kafkaNames = prefixed(KafkaAttrPrefix)

// KafkaHeader returns the record header that carries attribute attr.
func KafkaHeader(attr string) string { return name(kafkaNames, KafkaAttrPrefix, attr) }

// KafkaAttr returns the attribute that record header h carries, if it
// carries one.
func KafkaAttr(h string) (attr string, ok bool) { return cutPrefixFold(h, KafkaAttrPrefix) }

// KafkaReserved reports whether an event header named h would be read as an
// attribute or as the content type; the sink leaves such headers out.
func KafkaReserved(h string) bool {
	_, attr := KafkaAttr(h)
	return attr || strings.EqualFold(h, KafkaContentType)
}

// NATS: the CloudEvents NATS protocol binding, binary content mode, on
// JetStream. Attributes, datacontenttype included, are headers
// "ce-<attribute>" with percent-encoded values (NATSEncode); a plain
// "content-type" header carries the content type too, for consumers that do
// not speak CloudEvents; the event id is also the "Nats-Msg-Id" header
// (JetStream's dedupe id); the event headers are headers under their own
// names; the payload is the message data. Header names are matched without
// regard to case.
const (
	NATSAttrPrefix  = "ce-"
	NATSContentType = "content-type"
	NATSMsgID       = "Nats-Msg-Id"
	// NATSServerPrefix starts the headers JetStream acts on (Nats-Msg-Id,
	// Nats-Expected-*, Nats-Rollup, Nats-TTL, ...).
	NATSServerPrefix = "Nats-"
)

var natsNames = prefixed(NATSAttrPrefix)

// NATSHeader returns the header that carries attribute attr.
func NATSHeader(attr string) string { return name(natsNames, NATSAttrPrefix, attr) }

// NATSAttr returns the attribute that header h carries, if it carries one.
func NATSAttr(h string) (attr string, ok bool) { return cutPrefixFold(h, NATSAttrPrefix) }

// NATSReserved reports whether an event header named h would be read as an
// attribute or as the content type, or is one JetStream acts on (an event
// header "Nats-Rollup: all" would purge the stream); the sink leaves such
// headers out.
func NATSReserved(h string) bool {
	_, attr := NATSAttr(h)
	return attr || strings.EqualFold(h, NATSContentType) ||
		(len(h) >= len(NATSServerPrefix) && strings.EqualFold(h[:len(NATSServerPrefix)], NATSServerPrefix))
}

// NATSEncode percent-encodes an attribute value for a NATS header, as the
// binding requires: space, '"', '%' and every byte outside printable ASCII
// become %XX (of the UTF-8 bytes). Most values pass through unchanged,
// without allocating.
func NATSEncode(v string) string {
	i := 0
	for i < len(v) && !natsEscape(v[i]) {
		i++
	}
	if i == len(v) {
		return v
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(v)+16)
	b = append(b, v[:i]...)
	for ; i < len(v); i++ {
		if c := v[i]; natsEscape(c) {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func natsEscape(c byte) bool { return c <= ' ' || c >= 0x7f || c == '"' || c == '%' }

// NATSDecode reverses NATSEncode: every %XX becomes its byte. A '%' not
// followed by two hex digits is an error.
func NATSDecode(v string) (string, error) {
	i := strings.IndexByte(v, '%')
	if i < 0 {
		return v, nil
	}
	b := make([]byte, 0, len(v))
	b = append(b, v[:i]...)
	for ; i < len(v); i++ {
		c := v[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(v) || unhex(v[i+1]) < 0 || unhex(v[i+2]) < 0 {
			return "", fmt.Errorf("invalid percent-encoding %q at byte %d", v[i:min(i+3, len(v))], i)
		}
		b = append(b, byte(unhex(v[i+1])<<4|unhex(v[i+2])))
		i += 2
	}
	return string(b), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// AMQP: the CloudEvents AMQP protocol binding, binary content mode, on AMQP
// 0-9-1 (RabbitMQ). Attributes are application properties (the message's
// headers table) "cloudEvents_<attribute>", strings; datacontenttype is the
// content_type property; the event id is also the message_id property; the
// event headers are application properties under their own names; the
// payload is the body. The binding also allows the older prefix
// "cloudEvents:", which readers accept.
const (
	AMQPAttrPrefix      = "cloudEvents_"
	AMQPAttrPrefixColon = "cloudEvents:"
)

var amqpNames = prefixed(AMQPAttrPrefix)

// AMQPProperty returns the application property that carries attribute attr.
func AMQPProperty(attr string) string { return name(amqpNames, AMQPAttrPrefix, attr) }

// AMQPAttr returns the attribute that application property p carries, if it
// carries one (under either prefix).
func AMQPAttr(p string) (attr string, ok bool) {
	if a, ok := cutPrefixFold(p, AMQPAttrPrefix); ok {
		return a, true
	}
	return cutPrefixFold(p, AMQPAttrPrefixColon)
}

// AMQPReserved reports whether an event header named p would be read as an
// attribute; the sink leaves such headers out.
func AMQPReserved(p string) bool {
	_, attr := AMQPAttr(p)
	return attr
}

// Redis Streams (no CloudEvents binding exists; the outbox's own mapping):
// one stream entry per event whose fields are the attributes under their own
// names (no prefix), datacontenttype, "headers" (the event headers as one
// JSON object of strings, absent when there are none) and "payload" (the
// exact bytes). The event id is the "id" field.
const (
	RedisContentType = AttrDataContentType
	RedisHeaders     = "headers"
	RedisPayload     = "payload"
)

// RedisEncodeHeaders returns the value of the headers field for h.
func RedisEncodeHeaders(h map[string]string) []byte {
	b, _ := json.Marshal(h) // a map[string]string always encodes
	return b
}

// RedisDecodeHeaders parses the value of the headers field.
func RedisDecodeHeaders(v []byte) (map[string]string, error) {
	var h map[string]string
	if err := json.Unmarshal(v, &h); err != nil {
		return nil, fmt.Errorf("not a JSON object of strings: %w", err)
	}
	return h, nil
}
