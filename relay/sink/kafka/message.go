package kafka

import (
	"maps"
	"slices"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/sdk/wire"
)

// record builds the Kafka record for m in the format sdk/wire defines, with
// m.Headers (which the relay may have given a trace context of its own), not
// Event.Headers; an event header that wire.KafkaReserved names is left out.
// Header values and the key share one allocation; the payload is not copied.
func record(m *sink.Message) kafkago.Message {
	e := m.Event
	attrs := sink.CloudEvents(m)
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
		hs = append(hs, kafkago.Header{Key: wire.KafkaHeader(a.Name), Value: add(a.Value)})
	}
	if e.ContentType != "" {
		hs = append(hs, kafkago.Header{Key: wire.KafkaContentType, Value: add(e.ContentType)})
	}
	for _, k := range names {
		if wire.KafkaReserved(k) {
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
