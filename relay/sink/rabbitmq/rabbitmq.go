// Package rabbitmq is the relay's RabbitMQ sink (AMQP 0-9-1), built on
// rabbitmq/amqp091-go.
//
// A destination is "exchange/routing-key", split at the first '/'; an empty
// exchange ("/jobs") is the default exchange, where the routing key is a
// queue name; a destination without '/' is a routing key on Config.Exchange
// (by default the default exchange, so a bare destination names a queue).
// The sink declares no topology: exchanges, queues and bindings are the
// operator's.
//
// Each message is published persistent and mandatory, with message_id = the
// event id, content_type = the event's content type and the CloudEvents
// attributes as application properties ("cloudEvents_" prefix, the AMQP
// binding's preferred form) next to the event's own headers (traceparent,
// tracestate, user headers). See docs/cloudevents.md.
//
// Publish takes a channel in confirm mode, publishes the whole batch and
// then waits for all its confirms (a window as large as the batch, never one
// round trip per message). A mandatory message that no queue takes comes back
// as a basic.return before its positive confirm; the sink matches returns to
// messages by message_id and fails those permanently instead of reporting
// them delivered. An exchange is checked once per connection (a passive
// declare on a spare channel) before the sink publishes to it, so a missing
// exchange fails its messages permanently instead of closing the channel
// under the whole batch. A message RabbitMQ would answer by closing the
// connection (a short string such as the exchange, routing key or a header
// name that is not UTF-8 or is over 255 bytes; headers larger than a frame)
// fails permanently with a *FieldError before anything is sent (check.go).
//
// When the connection drops, Publish calls in progress fail with transient
// errors and the next Publish dials again.
package rabbitmq

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outboxrelay/outbox/internal/inflight"
	"github.com/outboxrelay/outbox/relay/sink"
)

// ErrClosed is returned for messages published after Close.
var ErrClosed = errors.New("rabbitmq: sink closed")

// ErrNacked is returned for a message the broker refused with a negative
// confirm (e.g. a queue's overflow policy reject-publish). It is transient.
var ErrNacked = errors.New("rabbitmq: broker nacked the message")

// Sink publishes relay messages to RabbitMQ. It is safe for concurrent use.
type Sink struct {
	cfg    Config
	tls    *tls.Config
	logger *slog.Logger
	slots  chan struct{} // one per channel publishing

	dialMu sync.Mutex // one dial at a time

	mu        sync.Mutex
	conn      *amqp.Connection
	idle      []*channel
	exchanges map[string]bool // exchanges known to exist, for conn

	calls inflight.Gate // Publish calls in progress; closed by Close
}

var _ sink.Sink = (*Sink)(nil)

// channel is a confirm-mode channel with its return and close notifications.
type channel struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
	closes  chan *amqp.Error
}

// New validates cfg, fills its defaults and connects to the broker. The
// sink logs to logger (nil discards) with "type"="rabbitmq" added; the relay
// passes logger.With("sink", <configured name>).
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Sink, error) {
	cfg, tlsConfig, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	s := &Sink{
		cfg:    cfg,
		tls:    tlsConfig,
		logger: cmp.Or(logger, slog.New(slog.DiscardHandler)).With("type", "rabbitmq"),
		slots:  make(chan struct{}, cfg.Channels),
	}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Ping checks the connection (dialing if it is down) by opening and closing
// a channel.
func (s *Sink) Ping(ctx context.Context) error {
	conn, err := s.connection(ctx)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: open channel: %w", err)
	}
	return ch.Close()
}

// connection returns the open connection, dialing a new one when there is
// none.
func (s *Sink) connection(ctx context.Context) (*amqp.Connection, error) {
	if s.calls.Closed() {
		return nil, ErrClosed
	}
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn != nil && !conn.IsClosed() {
		return conn, nil
	}
	s.dialMu.Lock()
	defer s.dialMu.Unlock()
	s.mu.Lock()
	conn = s.conn
	s.mu.Unlock()
	if conn != nil && !conn.IsClosed() {
		return conn, nil // another caller dialed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rabbitmq: connect: %w", err)
	}
	conn, err := amqp.DialConfig(s.cfg.URL, amqp.Config{
		Heartbeat:       s.cfg.Heartbeat,
		TLSClientConfig: s.tls,
		Dial:            amqp.DefaultDial(s.cfg.DialTimeout),
		Properties: amqp.Table{
			"connection_name": s.cfg.ConnectionName,
			"product":         "outbox-relay",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: connect to %s: %w", Redact(s.cfg.URL), err)
	}
	lost := conn.NotifyClose(make(chan *amqp.Error, 1))
	s.mu.Lock()
	if s.calls.Closed() {
		s.mu.Unlock()
		conn.Close()
		return nil, ErrClosed
	}
	s.conn = conn
	s.exchanges = make(map[string]bool)
	s.mu.Unlock()
	s.logger.Info("rabbitmq connected", "url", Redact(s.cfg.URL))
	go func() {
		if err := <-lost; err != nil {
			s.logger.Warn("rabbitmq connection lost", "error", err)
		}
	}()
	return conn, nil
}

// acquire returns a confirm-mode channel for one Publish call.
func (s *Sink) acquire(ctx context.Context) (*channel, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("rabbitmq: wait for a channel: %w", ctx.Err())
	}
	pc, err := s.open(ctx)
	if err != nil {
		<-s.slots
		return nil, err
	}
	return pc, nil
}

func (s *Sink) open(ctx context.Context) (*channel, error) {
	conn, err := s.connection(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	for len(s.idle) > 0 {
		pc := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if pc.conn == conn && !pc.ch.IsClosed() {
			s.mu.Unlock()
			return pc, nil
		}
		pc.ch.Close()
	}
	s.mu.Unlock()
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, fmt.Errorf("rabbitmq: confirm mode: %w", err)
	}
	return &channel{
		conn:    conn,
		ch:      ch,
		returns: ch.NotifyReturn(make(chan amqp.Return, 256)),
		closes:  ch.NotifyClose(make(chan *amqp.Error, 1)),
	}, nil
}

// release gives pc back for reuse if it is still clean, else closes it.
func (s *Sink) release(pc *channel, clean bool) {
	defer func() { <-s.slots }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if clean && !s.calls.Closed() && pc.conn == s.conn && !pc.ch.IsClosed() {
		s.idle = append(s.idle, pc)
		return
	}
	pc.ch.Close()
}

// Close waits for Publish calls in progress, then closes the connection.
// Publish calls after Close fail with ErrClosed.
func (s *Sink) Close() error {
	if !s.calls.Close() {
		return nil
	}
	s.dialMu.Lock() // no dial in progress
	defer s.dialMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pc := range s.idle {
		pc.ch.Close()
	}
	s.idle = nil
	if s.conn == nil || s.conn.IsClosed() {
		return nil
	}
	err := s.conn.Close()
	s.logger.Info("rabbitmq sink closed")
	if errors.Is(err, amqp.ErrClosed) {
		return nil
	}
	return err
}

// Publish publishes msgs on one channel and waits for their confirms. It
// returns nil when the broker confirmed every message and returned none as
// unroutable, else one result per message.
func (s *Sink) Publish(ctx context.Context, msgs []*sink.Message) []error {
	errs, ok := s.calls.EnterPublish(ctx, len(msgs), "rabbitmq", ErrClosed)
	if !ok {
		return errs
	}
	defer s.calls.Leave()

	errs = make([]error, len(msgs))
	for i, m := range msgs {
		switch {
		case len(m.Event.Payload) > s.cfg.MaxMessageBytes:
			errs[i] = sink.MarkPermanent(&TooLargeError{ID: m.Event.ID.String(), Size: len(m.Event.Payload), Max: s.cfg.MaxMessageBytes})
		case m.Destination == "" && s.cfg.Exchange == "":
			errs[i] = sink.Permanentf("rabbitmq: event %s: empty destination (no exchange or routing key)", m.Event.ID)
		}
	}
	pc, err := s.acquire(ctx)
	if err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
		return errs
	}
	pubs := make([]amqp.Publishing, len(msgs))
	for i, m := range msgs {
		if errs[i] != nil {
			continue
		}
		pubs[i] = publishing(m)
		exchange, key := route(m.Destination, s.cfg.Exchange)
		errs[i] = checkPublishing(m.Event.ID.String(), exchange, key, &pubs[i], pc.conn.Config.FrameSize)
	}
	s.checkExchanges(ctx, pc.conn, msgs, errs)
	clean := s.publish(ctx, pc, msgs, pubs, errs)
	s.release(pc, clean)
	for _, err := range errs {
		if err != nil {
			return errs
		}
	}
	return nil
}

// publish publishes the messages of msgs whose errs entry is nil (pubs[i] is
// msgs[i] as AMQP), waits for their confirms and fills errs. It reports
// whether pc can be reused.
func (s *Sink) publish(ctx context.Context, pc *channel, msgs []*sink.Message, pubs []amqp.Publishing, errs []error) (clean bool) {
	confirms := make([]*amqp.DeferredConfirmation, len(msgs))
	returned := make(map[string]amqp.Return)
	returns := pc.returns
	take := func(r amqp.Return, ok bool) {
		if !ok {
			returns = nil // the channel closed
			return
		}
		returned[r.MessageId] = r
	}
	drain := func() {
		for returns != nil {
			select {
			case r, ok := <-returns:
				take(r, ok)
			default:
				return
			}
		}
	}

	clean = true
	for i, m := range msgs {
		if errs[i] != nil {
			continue
		}
		exchange, key := route(m.Destination, s.cfg.Exchange)
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, pubs[i])
		if err != nil {
			err = fmt.Errorf("rabbitmq: publish: %w", err)
			for j := i; j < len(msgs); j++ {
				if errs[j] == nil {
					errs[j] = err
				}
			}
			clean = false
			break
		}
		confirms[i] = dc
		drain() // never let the library block on a full returns channel
	}

	timer := time.NewTimer(s.cfg.ConfirmTimeout)
	defer timer.Stop()
	var abort error // set when the wait for confirms is given up
	for i, dc := range confirms {
		if dc == nil {
			continue
		}
	wait:
		for abort == nil {
			select {
			case <-dc.Done():
				break wait
			case r, ok := <-returns:
				take(r, ok)
			case <-ctx.Done():
				abort = fmt.Errorf("rabbitmq: waiting for confirms: %w", ctx.Err())
			case <-timer.C:
				abort = fmt.Errorf("rabbitmq: no confirm within confirm_timeout (%v)", s.cfg.ConfirmTimeout)
			}
		}
		if abort != nil {
			// The channel's confirm sequence no longer matches our
			// bookkeeping: discard it.
			errs[i] = abort
			clean = false
			continue
		}
		if !dc.Acked() {
			errs[i] = s.nackError(pc)
			clean = false
		}
	}
	// A return comes before its message's confirm, so every return of this
	// batch is in the channel by now.
	drain()
	for i, m := range msgs {
		if r, ok := returned[m.Event.ID.String()]; ok && confirms[i] != nil {
			errs[i] = sink.MarkPermanent(&UnroutableError{
				ID: r.MessageId, Exchange: r.Exchange, RoutingKey: r.RoutingKey,
				Code: r.ReplyCode, Text: r.ReplyText,
			})
		}
	}
	return clean
}

// nackError explains a negative confirm: a real nack from the broker, or the
// channel closing (amqp091 nacks what is pending when it does).
func (s *Sink) nackError(pc *channel) error {
	if !pc.ch.IsClosed() {
		return ErrNacked
	}
	var reason *amqp.Error
	select {
	case reason = <-pc.closes:
	default:
	}
	if reason == nil {
		return errors.New("rabbitmq: channel closed before the broker confirmed the message")
	}
	if reason.Code == amqp.NotFound {
		// An exchange went away: check again next time.
		s.mu.Lock()
		clear(s.exchanges)
		s.mu.Unlock()
	}
	return fmt.Errorf("rabbitmq: channel closed before the broker confirmed the message: %w", reason)
}

// checkExchanges fails the messages whose exchange does not exist.
func (s *Sink) checkExchanges(ctx context.Context, conn *amqp.Connection, msgs []*sink.Message, errs []error) {
	var verdict map[string]error
	for i, m := range msgs {
		if errs[i] != nil {
			continue
		}
		exchange, _ := route(m.Destination, s.cfg.Exchange)
		if exchange == "" {
			continue
		}
		err, seen := verdict[exchange]
		if !seen {
			err = s.checkExchange(ctx, conn, exchange)
			if verdict == nil {
				verdict = make(map[string]error)
			}
			verdict[exchange] = err
		}
		errs[i] = err
	}
}

func (s *Sink) checkExchange(ctx context.Context, conn *amqp.Connection, exchange string) error {
	s.mu.Lock()
	known := conn == s.conn && s.exchanges[exchange]
	s.mu.Unlock()
	if known {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rabbitmq: check exchange %q: %w", exchange, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: check exchange %q: open channel: %w", exchange, err)
	}
	defer ch.Close()
	err = ch.ExchangeDeclarePassive(exchange, amqp.ExchangeDirect, false, false, false, false, nil)
	var aerr *amqp.Error
	switch {
	case err == nil:
		s.mu.Lock()
		if conn == s.conn {
			s.exchanges[exchange] = true
		}
		s.mu.Unlock()
		return nil
	case errors.As(err, &aerr) && aerr.Code == amqp.NotFound:
		return sink.MarkPermanent(&UnknownExchangeError{Exchange: exchange})
	case errors.As(err, &aerr) && aerr.Code == amqp.AccessRefused:
		return sink.MarkPermanent(fmt.Errorf("rabbitmq: exchange %q: %w", exchange, err))
	}
	return fmt.Errorf("rabbitmq: check exchange %q: %w", exchange, err)
}

// UnroutableError reports a message the broker returned because no queue is
// bound for its routing key. It is permanent.
type UnroutableError struct {
	ID, Exchange, RoutingKey string
	Code                     uint16 // 312 NO_ROUTE
	Text                     string
}

func (e *UnroutableError) Error() string {
	ex := e.Exchange
	if ex == "" {
		ex = "(default exchange)"
	}
	return fmt.Sprintf("rabbitmq: event %s unroutable: exchange %s, routing key %q: %d %s (bind a queue, or fix the route's destination)",
		e.ID, ex, e.RoutingKey, e.Code, e.Text)
}

// UnknownExchangeError reports a destination whose exchange does not exist.
// It is permanent.
type UnknownExchangeError struct{ Exchange string }

func (e *UnknownExchangeError) Error() string {
	return fmt.Sprintf("rabbitmq: exchange %q does not exist (declare it, or fix the route's destination)", e.Exchange)
}

// TooLargeError reports a payload larger than Config.MaxMessageBytes. It is
// permanent.
type TooLargeError struct {
	ID        string
	Size, Max int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("rabbitmq: event %s: payload of %d bytes exceeds max_message_bytes (%d)", e.ID, e.Size, e.Max)
}
