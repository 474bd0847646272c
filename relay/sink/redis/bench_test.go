package redis

import (
	"context"
	"testing"

	"github.com/outboxrelay/outbox/relay/sink/sinktest"
)

// BenchmarkFields measures building one stream entry from a relay message.
func BenchmarkFields(b *testing.B) {
	m := sinktest.NewMessage("orders", "order-42", 7)
	m.Event.Headers["tracestate"] = "congo=t61rcWkgMzE"
	b.ReportAllocs()
	for b.Loop() {
		if f := fields(m); len(f) == 0 {
			b.Fatal("no fields")
		}
	}
}

// BenchmarkPublish1000 measures Publish of 1,000-message batches (one
// pipeline each) to one stream capped at about 100,000 entries.
func BenchmarkPublish1000(b *testing.B) {
	stream := newStream(b)
	s := newSink(b, Config{MaxLen: 100_000})
	defer s.Close()
	msgs := sinktest.Batch(stream, sinktest.Keys("bench", 1000), 0)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if errs := s.Publish(ctx, msgs); errs != nil {
			b.Fatal(errs)
		}
	}
	b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
}
