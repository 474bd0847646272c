// Package redis is the relay's Redis Streams sink, built on
// redis/go-redis.
//
// Each message is one XADD to the stream named by Message.Destination, with
// an auto-generated entry id. The entry's fields, in this order: the
// CloudEvents attributes under their own names (id, specversion, type,
// source, subject, time, aggregatetype, schemaversion and tenantid when
// set), datacontenttype, headers (the event's headers as one JSON object,
// only when there are any) and payload (the exact bytes). The event id
// travels in the id field: Redis does not deduplicate, consumers do. The
// names are sdk/wire's, which inbox.FromRedis reads. See
// docs/cloudevents.md.
//
// One Publish call is one pipeline: every XADD of the batch in one round
// trip, each with its own result. Redis acknowledges a write once it is in
// memory: whether it survives a crash depends on the server's persistence
// (appendonly with appendfsync always or everysec) and replication; see
// docs/sinks.md.
package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outboxrelay/outbox/internal/inflight"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/sdk/wire"
)

// ErrClosed is returned for messages published after Close.
var ErrClosed = errors.New("redis: sink closed")

// Sink publishes relay messages to Redis Streams. It is safe for concurrent
// use.
type Sink struct {
	cfg    Config
	client *goredis.Client
	logger *slog.Logger

	calls inflight.Gate // Publish calls in progress; closed by Close
}

var _ sink.Sink = (*Sink)(nil)

// New validates cfg, fills its defaults and connects to the server. The
// sink logs to logger (nil discards) with "type"="redis" added; the relay
// passes logger.With("sink", <configured name>).
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Sink, error) {
	cfg, opts, err := cfg.options()
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	s := &Sink{
		cfg:    cfg,
		client: goredis.NewClient(opts),
		logger: cmp.Or(logger, slog.New(slog.DiscardHandler)).With("type", "redis"),
	}
	routeClientLogs(s.logger)
	if err := s.Ping(ctx); err != nil {
		s.client.Close()
		return nil, err
	}
	s.logger.Info("redis sink connected", "config", cfg)
	return s, nil
}

// Ping checks that the server answers (PING, after TLS and AUTH).
func (s *Sink) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: ping %s: %w", Redact(s.cfg.URL), err)
	}
	return nil
}

// Close waits for Publish calls in progress, then closes the connections.
// Publish calls after Close fail with ErrClosed.
func (s *Sink) Close() error {
	if !s.calls.Close() {
		return nil
	}
	s.logger.Info("redis sink closed")
	return s.client.Close()
}

// Publish appends msgs to their streams in one pipeline. It returns nil when
// the server appended every message, else one result per message.
func (s *Sink) Publish(ctx context.Context, msgs []*sink.Message) []error {
	errs, ok := s.calls.EnterPublish(ctx, len(msgs), "redis", ErrClosed)
	if !ok {
		return errs
	}
	defer s.calls.Leave()

	errs = make([]error, len(msgs))
	cmds := make([]*goredis.StringCmd, len(msgs))
	pipe := s.client.Pipeline()
	for i, m := range msgs {
		switch {
		case m.Destination == "":
			errs[i] = sink.Permanentf("redis: event %s: empty destination (no stream)", m.Event.ID)
		case len(m.Event.Payload) > s.cfg.MaxMessageBytes:
			errs[i] = sink.MarkPermanent(&TooLargeError{ID: m.Event.ID.String(), Size: len(m.Event.Payload), Max: s.cfg.MaxMessageBytes})
		default:
			cmds[i] = pipe.XAdd(ctx, &goredis.XAddArgs{
				Stream:     m.Destination,
				NoMkStream: s.cfg.NoMkStream,
				MaxLen:     s.cfg.MaxLen,
				Approx:     s.cfg.MaxLen > 0,
				Values:     fields(m),
			})
		}
	}
	if pipe.Len() > 0 {
		pipe.Exec(ctx) // each command carries its own error
	}
	failed := false
	for i, cmd := range cmds {
		if cmd != nil {
			errs[i] = s.classify(cmd.Err(), msgs[i])
		}
		failed = failed || errs[i] != nil
	}
	if !failed {
		return nil
	}
	return errs
}

// fields returns the stream entry fields of m as XADD takes them (name,
// value, name, value, ...), as sdk/wire defines them. The payload is not
// copied.
func fields(m *sink.Message) []any {
	e := m.Event
	attrs := sink.CloudEvents(m)
	f := make([]any, 0, 2*(len(attrs)+3))
	for _, a := range attrs {
		f = append(f, a.Name, a.Value)
	}
	f = append(f, wire.RedisContentType, e.ContentType)
	if len(m.Headers) > 0 {
		f = append(f, wire.RedisHeaders, wire.RedisEncodeHeaders(m.Headers))
	}
	return append(f, wire.RedisPayload, e.Payload)
}

// classify wraps err, marking what retrying cannot fix as permanent: the
// key holds another type (WRONGTYPE), the ACL user may not write the key
// (NOPERM), the stream does not exist with no_mkstream. Everything else
// (network errors, OOM, READONLY after a failover, LOADING, a failed AUTH,
// which breaks every message alike) is transient.
func (s *Sink) classify(err error, m *sink.Message) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, goredis.Nil) && s.cfg.NoMkStream {
		return sink.MarkPermanent(&UnknownStreamError{Stream: m.Destination})
	}
	wrapped := fmt.Errorf("redis: xadd %q: %w", m.Destination, err)
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		code, _, _ := strings.Cut(rerr.Error(), " ")
		switch code {
		case "WRONGTYPE", "NOPERM":
			return sink.MarkPermanent(wrapped)
		}
	}
	return wrapped
}

// UnknownStreamError reports a stream that does not exist while
// Config.NoMkStream is set. It is permanent.
type UnknownStreamError struct{ Stream string }

func (e *UnknownStreamError) Error() string {
	return fmt.Sprintf("redis: stream %q does not exist (create it, or unset no_mkstream)", e.Stream)
}

// TooLargeError reports a payload larger than Config.MaxMessageBytes. It is
// permanent.
type TooLargeError struct {
	ID        string
	Size, Max int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("redis: event %s: payload of %d bytes exceeds max_message_bytes (%d)", e.ID, e.Size, e.Max)
}
