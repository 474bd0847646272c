// Package kafka is the relay's Kafka sink, built on segmentio/kafka-go.
//
// Each message becomes one record: topic = Message.Destination, key =
// Event.Key() (the ordering key, so one key stays on one partition), value =
// the payload, headers in the CloudEvents Kafka binding's binary mode
// (ce_<attribute>, content-type) followed by the event's own headers
// (traceparent, tracestate, user headers). See docs/cloudevents.md.
//
// One Publish call is one WriteMessages call: the writer groups the batch per
// partition into produce requests of up to Config.BatchSize messages, waiting
// at most Config.BatchTimeout for a partial batch, with one request in flight
// per partition so a retried request cannot overtake a later one. kafka-go
// has no idempotent producer: a produce request retried after a lost
// response can write its records twice. Consumers deduplicate on the ce_id
// header.
package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outboxrelay/outbox/internal/inflight"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/sdk/wire"
)

// ErrClosed is returned for messages published after Close.
var ErrClosed = errors.New("kafka: sink closed")

// Sink publishes relay messages to Kafka. It is safe for concurrent use.
type Sink struct {
	cfg       Config
	logger    *slog.Logger
	addr      net.Addr
	transport *kafkago.Transport
	cancel    context.CancelFunc
	w         *kafkago.Writer

	// single sends one message per produce request; it re-sends the
	// messages of a batch the broker rejected as too large, so that only
	// the messages that are too large on their own fail.
	singleOnce sync.Once
	single     *kafkago.Writer

	calls inflight.Gate // Publish calls in progress; closed by Close

	// missing holds the topics found not to exist, with when the sink last
	// warned about each; Ping fails while it is not empty.
	missingMu sync.Mutex
	missing   map[string]time.Time
}

// missingWarnEvery is how often the sink repeats its warning about a topic
// that still does not exist.
const missingWarnEvery = time.Minute

var _ sink.Sink = (*Sink)(nil)

// New validates cfg, fills its defaults and connects to the brokers. The
// sink logs to logger (nil discards) with "type"="kafka" added; the relay
// passes logger.With("sink", <configured name>).
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Sink, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	logger = cmp.Or(logger, slog.New(slog.DiscardHandler)).With("type", "kafka")
	tlsConfig, _ := cfg.TLS.TLSConfig()
	mech, _ := cfg.SASL.mechanism()
	acks, _ := cfg.acks()
	codec, _ := cfg.compression()
	balancer, _ := cfg.balancer()

	tctx, cancel := context.WithCancel(context.Background())
	s := &Sink{
		cfg:    cfg,
		logger: logger,
		addr:   kafkago.TCP(cfg.Brokers...),
		cancel: cancel,
	}
	s.transport = &kafkago.Transport{
		DialTimeout: cfg.DialTimeout,
		ClientID:    cfg.ClientID,
		TLS:         tlsConfig,
		SASL:        mech,
		Context:     tctx,
	}
	s.w = s.writer(cfg.BatchSize, acks, codec, balancer)
	if err := s.Ping(ctx); err != nil {
		s.shutdown()
		return nil, fmt.Errorf("kafka: connect to %v: %w", cfg.Brokers, err)
	}
	logger.Info("kafka sink connected", "config", cfg)
	return s, nil
}

func (s *Sink) writer(batchSize int, acks kafkago.RequiredAcks, codec kafkago.Compression, balancer kafkago.Balancer) *kafkago.Writer {
	return &kafkago.Writer{
		Addr:                   s.addr,
		Balancer:               balancer,
		MaxAttempts:            s.cfg.MaxAttempts,
		BatchSize:              batchSize,
		BatchBytes:             int64(s.cfg.MaxMessageBytes),
		BatchTimeout:           s.cfg.BatchTimeout,
		WriteTimeout:           s.cfg.WriteTimeout,
		ReadTimeout:            s.cfg.WriteTimeout,
		RequiredAcks:           acks,
		Compression:            codec,
		Transport:              s.transport,
		AllowAutoTopicCreation: s.cfg.AutoCreateTopics,
	}
}

func (s *Sink) singleWriter() *kafkago.Writer {
	s.singleOnce.Do(func() {
		acks, _ := s.cfg.acks()
		codec, _ := s.cfg.compression()
		s.single = s.writer(1, acks, codec, s.w.Balancer)
	})
	return s.single
}

// Ping checks that a broker answers (an ApiVersions round trip, after TLS and
// SASL), and that every topic Publish found missing exists by now: while
// one does not, Ping fails naming it, so outbox_sink_up and /readyz show it.
func (s *Sink) Ping(ctx context.Context) error {
	c := &kafkago.Client{Addr: s.addr, Transport: s.transport, Timeout: s.cfg.DialTimeout}
	if _, err := c.ApiVersions(ctx, &kafkago.ApiVersionsRequest{}); err != nil {
		return err
	}
	s.missingMu.Lock()
	topics := slices.Sorted(maps.Keys(s.missing))
	s.missingMu.Unlock()
	var still []string
	for _, topic := range topics {
		exists, err := s.topicExists(ctx, topic)
		switch {
		case err != nil:
			return fmt.Errorf("kafka: check topic %q: %w", topic, err)
		case exists:
			s.topicFound(topic)
		default:
			still = append(still, topic)
		}
	}
	if len(still) > 0 {
		return fmt.Errorf("kafka: topics %q do not exist (create them, or set auto_create_topics); their events are retried until the route's retry budget runs out", still)
	}
	return nil
}

// topicMissing records that topic does not exist, warning when it was not
// known to be missing and then once a minute while it stays missing.
func (s *Sink) topicMissing(topic string) {
	s.missingMu.Lock()
	last, known := s.missing[topic]
	now := time.Now()
	warn := !known || now.Sub(last) >= missingWarnEvery
	if warn {
		if s.missing == nil {
			s.missing = map[string]time.Time{}
		}
		s.missing[topic] = now
	}
	s.missingMu.Unlock()
	if warn {
		s.logger.Warn("kafka topic does not exist; create it (or set auto_create_topics): its events are retried until the route's max_attempts or max_elapsed runs out, then dead-lettered",
			"topic", topic)
	}
}

// topicFound records that topic exists and reports whether it was missing.
func (s *Sink) topicFound(topic string) bool {
	s.missingMu.Lock()
	_, known := s.missing[topic]
	delete(s.missing, topic)
	s.missingMu.Unlock()
	if known {
		s.logger.Info("kafka topic exists now; delivering to it again", "topic", topic)
	}
	return known
}

// Close waits for Publish calls in progress, then closes the connections.
// Publish calls after Close fail with ErrClosed.
func (s *Sink) Close() error {
	if !s.calls.Close() {
		return nil
	}
	err := s.shutdown()
	s.logger.Info("kafka sink closed")
	return err
}

func (s *Sink) shutdown() error {
	err := s.w.Close()
	if s.single != nil {
		err = errors.Join(err, s.single.Close())
	}
	s.transport.CloseIdleConnections()
	s.cancel()
	return err
}

// Publish sends msgs in one WriteMessages call and returns nil when every
// message was acknowledged (with Config.RequiredAcks), else one result per
// message. Errors are classified as docs/sinks.md describes (see classify).
func (s *Sink) Publish(ctx context.Context, msgs []*sink.Message) []error {
	errs, ok := s.calls.EnterPublish(ctx, len(msgs), "kafka", ErrClosed)
	if !ok {
		return errs
	}
	defer s.calls.Leave()

	b := &batch{errs: make([]error, len(msgs))}
	kms := make([]kafkago.Message, 0, len(msgs))
	idx := make([]int, 0, len(msgs))
	for i, m := range msgs {
		if m.Destination == "" {
			b.errs[i] = sink.Permanentf("kafka: event %s: empty destination (no topic)", m.Event.ID)
			continue
		}
		km := record(m)
		if n := recordSize(&km); n > s.cfg.MaxMessageBytes {
			b.errs[i] = sink.MarkPermanent(&TooLargeError{ID: m.Event.ID.String(), Size: n, Max: s.cfg.MaxMessageBytes})
			continue
		}
		kms = append(kms, km)
		idx = append(idx, i)
	}
	s.write(ctx, s.w, kms, idx, b, true)
	for _, err := range b.errs {
		if err != nil {
			return b.errs
		}
	}
	return nil
}

// batch collects the results of one Publish; writes for different topics
// may fill it from several goroutines.
type batch struct {
	mu   sync.Mutex
	errs []error
}

func (b *batch) fail(i int, err error) {
	b.mu.Lock()
	b.errs[i] = err
	b.mu.Unlock()
}

// write sends kms (the messages at positions idx of the Publish call) with w
// and records each outcome. retry allows one more round for messages that
// the writer's stale metadata or a too large produce batch failed.
func (s *Sink) write(ctx context.Context, w *kafkago.Writer, kms []kafkago.Message, idx []int, b *batch, retry bool) {
	if len(kms) == 0 {
		return
	}
	err := w.WriteMessages(ctx, kms...)
	if err == nil {
		return
	}

	var werrs kafkago.WriteErrors
	var tooLarge kafkago.MessageTooLargeError
	switch {
	case errors.As(err, &werrs):
		// One error per message; the messages of one produce request
		// share theirs.
		var again []int // positions in kms worth one more round
		for j, e := range werrs {
			if e == nil {
				continue
			}
			if retry && (isCode(e, kafkago.MessageSizeTooLarge) || isCode(e, kafkago.RecordListTooLarge) || s.unknownTopic(e)) {
				again = append(again, j)
				continue
			}
			b.fail(idx[j], s.classify(e))
		}
		s.again(ctx, kms, idx, again, werrs, b)

	case ctx.Err() != nil:
		// WriteMessages stopped waiting; the records may still be written.
		for _, i := range idx {
			b.fail(i, fmt.Errorf("kafka: %w", err))
		}

	case errors.Is(err, io.ErrClosedPipe):
		for _, i := range idx {
			b.fail(i, ErrClosed)
		}

	case errors.As(err, &tooLarge):
		// Our size check should have caught it; find the message by its
		// id header, fail it, and send the rest.
		id := header(tooLarge.Message.Headers, wire.KafkaHeader(wire.AttrID))
		for j := range kms {
			if header(kms[j].Headers, wire.KafkaHeader(wire.AttrID)) == id {
				b.fail(idx[j], sink.MarkPermanent(fmt.Errorf("kafka: event %s: %w", id, err)))
				s.write(ctx, w, append(kms[:j:j], kms[j+1:]...), append(idx[:j:j], idx[j+1:]...), b, retry)
				return
			}
		}
		for _, i := range idx {
			b.fail(i, fmt.Errorf("kafka: %w", err))
		}

	default:
		// The writer failed before sending anything, on the metadata of
		// one of the topics. With several topics, find out which one by
		// writing each topic's messages on their own.
		byTopic := make(map[string][]int)
		for j := range kms {
			byTopic[kms[j].Topic] = append(byTopic[kms[j].Topic], j)
		}
		if len(byTopic) > 1 {
			var wg sync.WaitGroup
			for _, js := range byTopic {
				tkms := make([]kafkago.Message, len(js))
				tidx := make([]int, len(js))
				for n, j := range js {
					tkms[n], tidx[n] = kms[j], idx[j]
				}
				wg.Go(func() { s.write(ctx, w, tkms, tidx, b, retry) })
			}
			wg.Wait()
			return
		}
		if retry && s.unknownTopic(err) {
			all := make([]int, len(kms))
			for j := range all {
				all[j] = j
			}
			s.again(ctx, kms, idx, all, nil, b)
			return
		}
		e := s.classify(err)
		for _, i := range idx {
			b.fail(i, e)
		}
	}
}

// again handles the messages at positions js of kms that failed in a way one
// more round can fix: a produce batch the broker found too large is re-sent
// one message per request, and a topic the writer's metadata cache does not
// know is checked with the brokers before the messages are written again or
// failed permanently. werrs, when not nil, holds the first round's errors.
func (s *Sink) again(ctx context.Context, kms []kafkago.Message, idx []int, js []int, werrs kafkago.WriteErrors, b *batch) {
	if len(js) == 0 {
		return
	}
	var large, unknown []int
	for _, j := range js {
		if werrs != nil && (isCode(werrs[j], kafkago.MessageSizeTooLarge) || isCode(werrs[j], kafkago.RecordListTooLarge)) {
			large = append(large, j)
		} else {
			unknown = append(unknown, j)
		}
	}
	pick := func(js []int) ([]kafkago.Message, []int) {
		m := make([]kafkago.Message, len(js))
		n := make([]int, len(js))
		for k, j := range js {
			m[k], n[k] = kms[j], idx[j]
		}
		return m, n
	}
	if len(large) > 0 {
		m, n := pick(large)
		s.write(ctx, s.singleWriter(), m, n, b, false)
	}
	if len(unknown) == 0 {
		return
	}
	byTopic := make(map[string][]int)
	for _, j := range unknown {
		byTopic[kms[j].Topic] = append(byTopic[kms[j].Topic], j)
	}
	for topic, tjs := range byTopic {
		m, n := pick(tjs)
		exists, err := s.topicExists(ctx, topic)
		switch {
		case err != nil:
			e := s.classify(fmt.Errorf("topic %q is unknown to the client's metadata and checking it failed: %w", topic, err))
			for _, i := range n {
				b.fail(i, e)
			}
		case !exists:
			s.topicMissing(topic)
			e := &UnknownTopicError{Topic: topic}
			for _, i := range n {
				b.fail(i, e)
			}
		default:
			// The topic was created after the client's metadata was
			// loaded: refresh it and write again.
			if !s.topicFound(topic) {
				s.logger.Info("kafka topic appeared, refreshing metadata", "topic", topic)
			}
			if err := s.refreshTopic(ctx, topic); err != nil {
				e := fmt.Errorf("kafka: refresh metadata of topic %q: %w", topic, err)
				for _, i := range n {
					b.fail(i, e)
				}
				continue
			}
			s.write(ctx, s.w, m, n, b, false)
		}
	}
}

// unknownTopic reports whether err says a topic does not exist, in a way
// that may be only the writer's cached metadata talking.
func (s *Sink) unknownTopic(err error) bool {
	return !s.cfg.AutoCreateTopics && isCode(err, kafkago.UnknownTopicOrPartition)
}

func isCode(err error, code kafkago.Error) bool {
	var kerr kafkago.Error
	return errors.As(err, &kerr) && kerr == code
}

func header(hs []kafkago.Header, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
