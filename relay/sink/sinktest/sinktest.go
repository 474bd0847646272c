// Package sinktest is the contract suite every sink.Sink must pass, with
// helpers for the sinks' own tests and benchmarks.
//
// A sink package wires its broker into a Harness and calls Run from a test:
//
//	func TestContract(t *testing.T) {
//		sinktest.Run(t, sinktest.Harness{
//			New:         func(t *testing.T) sink.Sink { ... },
//			Destination: func(t *testing.T) string { ... },
//			Consume:     func(ctx context.Context, t *testing.T, dest string, min int) []sinktest.Received { ... },
//		})
//	}
//
// The suite checks what sink.Sink promises: the result shape, the event id
// and every CloudEvents attribute and header on each message (and that the
// SDK's reader for the binding decodes the message into the event the sink
// was given), order per key
// across batches, per-message error classification (sink.Permanent), Publish
// after and during Close, concurrent Publish calls and, when the harness can
// cut the broker off, transient errors during an outage and recovery without
// a new sink.
package sinktest

import (
	"context"
	"testing"

	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/sdk/inbox"
)

// Received is one message as a consumer read it back from a destination,
// decoded from the broker's representation into neutral fields.
type Received struct {
	// ID is the event id where the broker deduplicates or consumers see it:
	// the Kafka ce_id header, Nats-Msg-Id, the AMQP message_id, the Redis id
	// field.
	ID string
	// Key is the ordering key where the binding carries one of its own (the
	// Kafka record key); empty for bindings that do not.
	Key string
	// Attributes holds the CloudEvents attributes without the binding's
	// prefix (id, source, type, ...; not datacontenttype, see ContentType),
	// values decoded (e.g. percent-decoded for NATS).
	Attributes map[string]string
	// ContentType is the binding's content-type field, which carries
	// datacontenttype.
	ContentType string
	// Headers holds the event's own headers (traceparent, tracestate, user
	// headers) as the binding carries them.
	Headers map[string]string
	// Payload is the message body.
	Payload []byte
	// Inbox is the message as the SDK's reader for the binding
	// (sdk/inbox.FromKafka, FromNATS, FromAMQP, FromRedis) decodes it, and
	// InboxErr that reader's error. Consume sets them when the harness sets
	// SDKReader.
	Inbox    inbox.Envelope
	InboxErr error
}

// Harness connects the suite to one broker.
type Harness struct {
	// New returns a new sink connected to the broker. The suite closes it.
	// Required.
	New func(t *testing.T) sink.Sink
	// Destination returns a fresh destination that accepts messages and that
	// Consume can read (a topic, exchange/routing key with a bound queue,
	// subject, stream). Required.
	Destination func(t *testing.T) string
	// Consume returns every message that arrived at dest so far, each key's
	// messages in arrival order, waiting until at least min have arrived or
	// ctx is done (then it returns what it has; the suite reports the
	// shortfall). It is called once per destination. Required.
	Consume func(ctx context.Context, t *testing.T, dest string, min int) []Received
	// Permanent lists ways to make one message fail permanently (too large,
	// unroutable, unknown destination, ...). Each case is checked in a batch
	// with good messages. Every broker sink should give at least one.
	Permanent []PermanentCase
	// SDKReader says that the SDK reads this binding and that Consume sets
	// Received.Inbox with its reader: the suite then checks that the reader
	// gets back every part of the event the sink was given (id, type,
	// aggregate, schema version, tenant, time, content type, payload bytes,
	// headers and trace context). Set it for every binding the SDK reads.
	SDKReader bool
	// Outage, when set, enables the outage test: it returns a sink whose
	// broker link the test can cut and restore.
	Outage func(t *testing.T) Outage
}

// PermanentCase is one way to provoke a permanent delivery failure.
type PermanentCase struct {
	Name string
	// Break changes m (its Destination, Payload, ...) so that publishing it
	// fails permanently. m.Destination is a fresh, working destination when
	// Break is called.
	Break func(t *testing.T, m *sink.Message)
}

// Outage is a sink whose broker can be made unreachable and reachable again.
type Outage struct {
	Sink        sink.Sink
	Destination string
	// Cut makes the broker unreachable: open connections break, new ones fail.
	Cut func()
	// Restore makes the broker reachable again.
	Restore func()
}

// Run runs the contract suite against h.
func Run(t *testing.T, h Harness) {
	if h.New == nil || h.Destination == nil || h.Consume == nil {
		t.Fatal("sinktest: Harness needs New, Destination and Consume")
	}
	t.Run("Envelope", func(t *testing.T) { t.Parallel(); testEnvelope(t, h) })
	t.Run("EmptyBatch", func(t *testing.T) { t.Parallel(); testEmptyBatch(t, h) })
	t.Run("OrderPerKey", func(t *testing.T) { t.Parallel(); testOrderPerKey(t, h) })
	t.Run("Concurrent", func(t *testing.T) { t.Parallel(); testConcurrent(t, h) })
	t.Run("Permanent", func(t *testing.T) {
		if len(h.Permanent) == 0 {
			t.Skip("sinktest: the harness gives no permanent failure case")
		}
		for _, pc := range h.Permanent {
			t.Run(pc.Name, func(t *testing.T) { t.Parallel(); testPermanent(t, h, pc) })
		}
	})
	t.Run("CanceledContext", func(t *testing.T) { t.Parallel(); testCanceled(t, h) })
	t.Run("PublishAfterClose", func(t *testing.T) { t.Parallel(); testAfterClose(t, h) })
	t.Run("CloseWhilePublishing", func(t *testing.T) { t.Parallel(); testCloseWhilePublishing(t, h) })
	t.Run("Outage", func(t *testing.T) {
		if h.Outage == nil {
			t.Skip("sinktest: the harness cannot cut the broker off")
		}
		testOutage(t, h)
	})
}
