package kafka

import (
	"context"
	"errors"
	"fmt"

	kafkago "github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/outboxrelay/outbox/relay/sink"
)

// TooLargeError reports a message larger than Config.MaxMessageBytes. It is
// permanent.
type TooLargeError struct {
	ID   string // event id
	Size int    // bytes, as the client counts them
	Max  int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("kafka: event %s: message of %d bytes exceeds max_message_bytes (%d)", e.ID, e.Size, e.Max)
}

// Unwrap lets errors.Is match kafka-go's MessageSizeTooLarge.
func (e *TooLargeError) Unwrap() error { return kafkago.MessageSizeTooLarge }

// UnknownTopicError reports a topic that does not exist while
// Config.AutoCreateTopics is off. It is transient, as for Kafka's own
// producers: the relay retries the message under the route's retry budget
// (max_attempts, max_elapsed), and creating the topic is enough for delivery
// to resume.
type UnknownTopicError struct{ Topic string }

func (e *UnknownTopicError) Error() string {
	return fmt.Sprintf("kafka: topic %q does not exist (create it, or set auto_create_topics); retrying", e.Topic)
}

// Unwrap lets errors.Is match kafka-go's UnknownTopicOrPartition.
func (e *UnknownTopicError) Unwrap() error { return kafkago.UnknownTopicOrPartition }

// classify wraps a kafka-go error, marking what retrying cannot fix as
// permanent: a message or batch the broker finds too large, an invalid topic
// name, a topic the credentials may not write, a record or topic policy the
// broker rejects. Everything else (network errors, leader changes, not
// enough replicas, timeouts, a failed SASL handshake, which breaks every
// message alike, a topic that does not exist yet) is transient.
func (s *Sink) classify(err error) error {
	wrapped := fmt.Errorf("kafka: %w", err)
	var kerr kafkago.Error
	if errors.As(err, &kerr) {
		switch kerr {
		case kafkago.MessageSizeTooLarge,
			kafkago.RecordListTooLarge,
			kafkago.InvalidTopic,
			kafkago.TopicAuthorizationFailed,
			kafkago.InvalidRecord,
			kafkago.PolicyViolation:
			return sink.MarkPermanent(wrapped)
		}
	}
	return wrapped
}

// topicExists asks the brokers whether topic exists, through a transport of
// its own: the writer's transport answers metadata requests from a cache
// that can be seconds old.
func (s *Sink) topicExists(ctx context.Context, topic string) (bool, error) {
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := &kafkago.Transport{
		DialTimeout:    s.transport.DialTimeout,
		ClientID:       s.transport.ClientID,
		TLS:            s.transport.TLS,
		SASL:           s.transport.SASL,
		MetadataTopics: []string{topic},
		Context:        tctx,
	}
	defer t.CloseIdleConnections()
	c := &kafkago.Client{Addr: s.addr, Transport: t, Timeout: s.cfg.WriteTimeout}
	r, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return false, err
	}
	for _, t := range r.Topics {
		if t.Name != topic {
			continue
		}
		switch {
		case t.Error == nil:
			return true, nil
		case errors.Is(t.Error, kafkago.UnknownTopicOrPartition):
			return false, nil
		default:
			return false, t.Error
		}
	}
	return false, nil
}

// refreshTopic makes the writer's transport load the metadata of topic,
// which exists. A metadata request that allows auto-creation is the one kind
// the transport sends to the brokers instead of answering from its cache,
// and it waits until the cache has the topic; since the topic exists,
// nothing is created.
func (s *Sink) refreshTopic(ctx context.Context, topic string) error {
	r, err := s.transport.RoundTrip(ctx, s.addr, &metadataAPI.Request{
		TopicNames:             []string{topic},
		AllowAutoTopicCreation: true,
	})
	if err != nil {
		return err
	}
	for _, t := range r.(*metadataAPI.Response).Topics {
		if t.Name == topic && t.ErrorCode != 0 {
			return kafkago.Error(t.ErrorCode)
		}
	}
	return nil
}
