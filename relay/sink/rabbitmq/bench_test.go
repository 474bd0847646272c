package rabbitmq

import (
	"context"
	"testing"

	"github.com/outboxrelay/outbox/relay/sink/sinktest"
)

// BenchmarkPublishing measures building one AMQP message from a relay
// message.
func BenchmarkPublishing(b *testing.B) {
	m := sinktest.NewMessage("orders/order.created", "order-42", 7)
	m.Event.Headers["tracestate"] = "congo=t61rcWkgMzE"
	b.ReportAllocs()
	for b.Loop() {
		p := publishing(m)
		if p.MessageId == "" {
			b.Fatal("no message id")
		}
	}
}

// BenchmarkPublish1000 measures Publish of 1,000-message batches (persistent,
// mandatory, confirmed) to one queue of each type.
func BenchmarkPublish1000(b *testing.B) {
	for _, kind := range []string{"classic", "quorum"} {
		b.Run(kind, func(b *testing.B) {
			dest := newQueue(b, kind)
			s := newSink(b, Config{})
			defer s.Close()
			msgs := sinktest.Batch(dest, sinktest.Keys("bench", 1000), 0)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if errs := s.Publish(ctx, msgs); errs != nil {
					b.Fatal(errs)
				}
			}
			b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
