// Package sink is the contract between the relay and the sinks that deliver
// its messages to brokers: the Sink interface, the Message and Event a sink
// receives, the permanent-error classification (Permanent, MarkPermanent),
// and the CloudEvents attributes every binding carries (CloudEvents,
// TimeAttribute).
//
// A sink package imports this package, not the relay, so that it compiles
// without the relay's replication, routing and metrics dependencies; the
// relay takes any Sink (relay.New). Each sink asserts
//
//	var _ sink.Sink = (*Sink)(nil)
//
// and passes the contract suite in relay/sink/sinktest. The sinks of this
// module are in the packages below this one (kafka, nats, rabbitmq, redis,
// stdout, handler); relay/sink/registry builds them from relay.yaml.
package sink
