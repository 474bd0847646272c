package kafka

import (
	"context"
	"testing"

	"github.com/outboxrelay/outbox/relay/sink/sinktest"
)

// BenchmarkRecord measures building one Kafka record from a relay message.
func BenchmarkRecord(b *testing.B) {
	m := sinktest.NewMessage("orders", "order-42", 7)
	m.Event.Headers["tracestate"] = "congo=t61rcWkgMzE"
	b.ReportAllocs()
	for b.Loop() {
		km := record(m)
		if len(km.Headers) == 0 {
			b.Fatal("no headers")
		}
	}
}

// BenchmarkPublish1000 measures Publish of 1,000-message batches (1,000
// distinct keys) to a 3-partition topic, acks=all.
func BenchmarkPublish1000(b *testing.B) {
	topic := newTopic(b)
	s := newSink(b, Config{})
	defer s.Close()
	msgs := sinktest.Batch(topic, sinktest.Keys("bench", 1000), 0)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if errs := s.Publish(ctx, msgs); errs != nil {
			b.Fatal(errs)
		}
	}
	b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
}
