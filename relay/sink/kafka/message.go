package kafka

import (
	"maps"
	"slices"
	"strings"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outboxrelay/outbox/relay"
)

// Header names of the CloudEvents Kafka binding (binary content mode).
const (
	headerPrefix      = "ce_"
	headerContentType = "content-type"
)

// ceHeader returns the binding's header name for a CloudEvents attribute,
// without allocating for the attributes relay.CloudEvents produces.
func ceHeader(name string) string {
	switch name {
	case relay.CESpecVersion:
		return "ce_specversion"
	case relay.CEID:
		return "ce_id"
	case relay.CESource:
		return "ce_source"
	case relay.CEType:
		return "ce_type"
	case relay.CESubject:
		return "ce_subject"
	case relay.CETime:
		return "ce_time"
	case relay.CEAggregateType:
		return "ce_aggregatetype"
	case relay.CESchemaVersion:
		return "ce_schemaversion"
	case relay.CETenantID:
		return "ce_tenantid"
	}
	return headerPrefix + name
}

// reserved reports whether an event header would shadow a binding header;
// such event headers are left out.
func reserved(name string) bool {
	return strings.HasPrefix(strings.ToLower(name), headerPrefix) || strings.EqualFold(name, headerContentType)
}

// record builds the Kafka record for m, with m.Headers (which the relay may
// have given a trace context of its own), not Event.Headers. Header values
// and the key share one allocation; the payload is not copied.
func record(m *relay.Message) kafkago.Message {
	e := m.Event
	attrs := relay.CloudEvents(m)
	var names []string
	if len(m.Headers) > 0 {
		names = slices.Sorted(maps.Keys(m.Headers))
	}

	size := len(e.AggregateType) + 1 + len(e.AggregateID) + len(e.ContentType)
	for _, a := range attrs {
		size += len(a.Value)
	}
	for _, k := range names {
		size += len(m.Headers[k])
	}
	buf := make([]byte, 0, size)
	add := func(s string) []byte {
		start := len(buf)
		buf = append(buf, s...)
		return buf[start:len(buf):len(buf)]
	}

	hs := make([]kafkago.Header, 0, len(attrs)+1+len(names))
	for _, a := range attrs {
		hs = append(hs, kafkago.Header{Key: ceHeader(a.Name), Value: add(a.Value)})
	}
	if e.ContentType != "" {
		hs = append(hs, kafkago.Header{Key: headerContentType, Value: add(e.ContentType)})
	}
	for _, k := range names {
		if reserved(k) {
			continue
		}
		hs = append(hs, kafkago.Header{Key: k, Value: add(m.Headers[k])})
	}
	start := len(buf)
	buf = append(buf, e.AggregateType...)
	buf = append(buf, ':')
	buf = append(buf, e.AggregateID...)
	return kafkago.Message{
		Topic:   m.Destination,
		Key:     buf[start:],
		Value:   e.Payload,
		Headers: hs,
	}
}

// recordSize is the size kafka-go's Writer (v0.4.51, Message.totalSize)
// compares with BatchBytes, computed the same way so that the sink rejects
// exactly the messages the writer would refuse.
func recordSize(m *kafkago.Message) int {
	n := 4 + 1 + 1 + (4 + len(m.Key)) + (4 + len(m.Value)) + 8
	n += varIntLen(len(m.Headers))
	for _, h := range m.Headers {
		n += varIntLen(len(h.Key)) + len(h.Key) + varIntLen(len(h.Value)) + len(h.Value)
	}
	return n
}

func varIntLen(i int) int {
	u := uint64(i) << 1 // zig-zag of a non-negative number
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}
