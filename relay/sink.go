package relay

import "github.com/outboxrelay/outbox/relay/sink"

// The sink contract lives in package sink, which sinks import instead of
// the relay. These aliases name its types where the relay's API takes them
// (New's sinks, the handler sink's messages).
type (
	// Sink delivers messages to one broker; see sink.Sink for the contract.
	Sink = sink.Sink
	// Message is one event addressed to one destination of one sink.
	Message = sink.Message
	// Event is one row of the outbox events table as the relay read it.
	Event = sink.Event
)
