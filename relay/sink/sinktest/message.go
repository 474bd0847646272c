package sinktest

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/outboxrelay/outbox/relay/sink"
)

// Source is the CloudEvents source the suite's messages carry.
const Source = "/outbox/sinktest"

// NewMessage returns a message for dest with a new UUIDv7 event id, ordering
// key "order:"+key, a small JSON payload naming key and seq, a W3C trace
// context and one user header (Message.Headers and Event.Headers are the
// same map).
func NewMessage(dest, key string, seq int) *sink.Message {
	id, err := uuid.NewV7()
	if err != nil {
		panic(err)
	}
	now := time.Now().UTC()
	headers := map[string]string{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"x-sinktest":  fmt.Sprintf("%s/%d", key, seq),
	}
	return &sink.Message{
		Event: &sink.Event{
			ID:            id,
			AggregateType: "order",
			AggregateID:   key,
			EventType:     "order.updated",
			SchemaVersion: "1.0",
			Payload:       fmt.Appendf(nil, `{"key":%q,"seq":%d,"note":"sinktest payload with some padding to look like a real event"}`, key, seq),
			ContentType:   "application/json",
			Headers:       headers,
			OccurredAt:    now.Add(-time.Second),
			CreatedAt:     now,
			CommitTime:    now,
		},
		Route:       "sinktest",
		Destination: dest,
		Source:      Source,
		Headers:     headers,
		Attempt:     1,
	}
}

// Batch returns one message per key for dest, all with sequence number seq.
func Batch(dest string, keys []string, seq int) []*sink.Message {
	msgs := make([]*sink.Message, len(keys))
	for i, k := range keys {
		msgs[i] = NewMessage(dest, k, seq)
	}
	return msgs
}

// Keys returns n distinct ordering keys starting with prefix.
func Keys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return keys
}
