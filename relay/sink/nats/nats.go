// Package nats delivers outbox events to NATS JetStream.
//
// Each message is published asynchronously with Nats-Msg-Id set to the event
// id, so JetStream drops a duplicate published again after a crash or an
// ambiguous failure (within the stream's duplicate window). A batch is sent
// without waiting, then every acknowledgement is awaited: one round trip per
// batch, not per message. CloudEvents attributes travel as ce- headers (binary
// content mode of the CloudEvents NATS binding). An event header NATS cannot
// carry unchanged fails its message permanently before it is sent (see
// CheckHeaders).
package nats

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outbox/internal/inflight"
	"github.com/outboxrelay/outbox/internal/redact"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/sdk/wire"
)

// ErrClosed is returned for messages published after Close.
var ErrClosed = errors.New("nats: sink closed")

// Config configures the sink. Fields are read from the sink's entry in relay.yaml.
type Config struct {
	// URL of the NATS server(s), comma-separated; a URL without a scheme
	// is taken as nats://. Defaults to nats://127.0.0.1:4222.
	URL string `yaml:"url"`
	// Stream is the JetStream stream the destinations belong to. It is
	// created when missing, with Subjects. Required.
	Stream string `yaml:"stream"`
	// Subjects of the stream when the sink creates it, and subjects added to
	// an existing stream that lacks them. Defaults to the subjects the routes
	// of this sink can produce.
	Subjects []string `yaml:"subjects"`
	// Storage of a created stream: file or memory. Defaults to file.
	Storage string `yaml:"storage"`
	// Replicas of a created stream. Defaults to 1.
	Replicas int `yaml:"replicas"`
	// DuplicateWindow of a created stream: how long JetStream remembers
	// message ids to drop duplicates. Defaults to 2m.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	// Creds is a credentials file (JWT and NKey seed).
	Creds string `yaml:"creds"`
	// NKey is an NKey seed file.
	NKey string `yaml:"nkey"`
	// User and Password, or Token, for plain authentication (prefer ${ENV}).
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	Token    string `yaml:"token"`
	// TLS: CA file, client certificate and key.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// PublishTimeout bounds the wait for one message's acknowledgement.
	// Defaults to 10s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// MaxAsyncPending bounds unacknowledged messages on the connection.
	// Defaults to 4000.
	MaxAsyncPending int `yaml:"max_async_pending"`
}

// Validate checks the config as New does before it connects; errors name
// the key.
func (c Config) Validate() error {
	switch {
	case c.Stream == "":
		return errors.New("stream: required (the JetStream stream to publish into)")
	case strings.ContainsAny(c.Stream, ">*. /\\\t\r\n"):
		return fmt.Errorf("stream: %q is not a JetStream stream name (it may not contain spaces, '.', '*', '>', '/' or '\\')", c.Stream)
	}
	if st := cmp.Or(c.Storage, "file"); st != "file" && st != "memory" {
		return fmt.Errorf("storage: must be file or memory, not %q", c.Storage)
	}
	switch {
	case c.DuplicateWindow < 0:
		return fmt.Errorf("duplicate_window: %v is negative", c.DuplicateWindow)
	case c.PublishTimeout < 0:
		return fmt.Errorf("publish_timeout: %v is negative", c.PublishTimeout)
	}
	// nats.Connect's own parse error repeats the URL, password included.
	for _, u := range serverURLs(c.URL) {
		if _, err := redact.ParseURL(u); err != nil {
			return err
		}
	}
	if c.NKey != "" {
		if _, err := nats.NkeyOptionFromSeed(c.NKey); err != nil {
			return fmt.Errorf("nkey: %w", err)
		}
	}
	return nil
}

// serverURLs splits a comma-separated list of server URLs as nats.Connect
// does, with nats:// added to a URL without a scheme.
func serverURLs(list string) []string {
	var urls []string
	for u := range strings.SplitSeq(list, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		urls = append(urls, u)
	}
	return urls
}

// Sink publishes to JetStream. It is safe for concurrent use.
type Sink struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	logger *slog.Logger

	calls inflight.Gate // Publish calls in progress; closed by Close
}

var _ sink.Sink = (*Sink)(nil)

// New connects to NATS and creates or checks the stream. The sink logs to
// logger (nil means slog.Default()) with "type"="nats" added; the relay
// passes logger.With("sink", <configured name>).
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Sink, error) {
	cfg.URL = cmp.Or(cfg.URL, nats.DefaultURL)
	cfg.Storage = cmp.Or(cfg.Storage, "file")
	cfg.Replicas = cmp.Or(cfg.Replicas, 1)
	cfg.DuplicateWindow = cmp.Or(cfg.DuplicateWindow, 2*time.Minute)
	cfg.PublishTimeout = cmp.Or(cfg.PublishTimeout, 10*time.Second)
	cfg.MaxAsyncPending = cmp.Or(cfg.MaxAsyncPending, 4000)
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("type", "nats")
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	opts := []nats.Option{
		nats.Name("outbox-relay"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("sink disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			logger.Info("sink reconnected", "server", redact.URL(c.ConnectedUrl()))
		}),
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKey)
		if err != nil {
			return nil, fmt.Errorf("nats: nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	if strings.HasPrefix(cfg.URL, "tls://") {
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect to %s: %w", redact.URLs(cfg.URL), err)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxAsyncPending),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout),
	)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats: %w", err)
	}
	s := &Sink{cfg: cfg, nc: nc, js: js, logger: logger}
	if err := s.ensureStream(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	logger.Info("sink connected", "server", redact.URL(nc.ConnectedUrl()), "stream", cfg.Stream)
	return s, nil
}

func (s *Sink) ensureStream(ctx context.Context) error {
	st, err := s.js.Stream(ctx, s.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if len(s.cfg.Subjects) == 0 {
			return fmt.Errorf("nats: stream %s does not exist and no subjects are known to create it with: set subjects", s.cfg.Stream)
		}
		storage := jetstream.FileStorage
		if s.cfg.Storage == "memory" {
			storage = jetstream.MemoryStorage
		}
		_, err = s.js.CreateStream(ctx, jetstream.StreamConfig{
			Name: s.cfg.Stream, Subjects: s.cfg.Subjects, Storage: storage, Replicas: s.cfg.Replicas,
			Duplicates: s.cfg.DuplicateWindow,
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("nats: create stream %s: %w", s.cfg.Stream, err)
		}
		s.logger.Info("stream created", "stream", s.cfg.Stream, "subjects", s.cfg.Subjects)
		return nil
	}
	if err != nil {
		return fmt.Errorf("nats: stream %s: %w", s.cfg.Stream, err)
	}
	info := st.CachedInfo()
	var missing []string
	for _, subj := range s.cfg.Subjects {
		if !slices.Contains(info.Config.Subjects, subj) {
			missing = append(missing, subj)
		}
	}
	if len(missing) > 0 {
		cfg := info.Config
		cfg.Subjects = append(cfg.Subjects, missing...)
		if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("nats: add subjects %v to stream %s: %w", missing, s.cfg.Stream, err)
		}
		s.logger.Info("stream subjects added", "stream", s.cfg.Stream, "subjects", missing)
	}
	return nil
}

// SubjectsFor returns the stream subjects that cover the given destination
// templates (the relay's *relay.Destination): a literal destination as it
// is, a template by its literal prefix followed by ">" (all subjects below
// it).
func SubjectsFor[D interface{ LiteralPrefix() (string, bool) }](dests []D) []string {
	var out []string
	for _, d := range dests {
		prefix, literal := d.LiteralPrefix()
		subj := prefix
		if !literal {
			if i := strings.LastIndexByte(prefix, '.'); i >= 0 {
				subj = prefix[:i+1] + ">"
			} else {
				subj = ">"
			}
		}
		if !slices.Contains(out, subj) {
			out = append(out, subj)
		}
	}
	return out
}

// Message builds the NATS message of m in the format sdk/wire defines
// (without the Nats-Msg-Id, which the publish option sets). An event header
// that wire.NATSReserved names (ce-*, content-type, Nats-*) is left out.
func Message(m *sink.Message) *nats.Msg {
	e := m.Event
	attrs := sink.CloudEvents(m)
	n := len(m.Headers) + len(attrs) + 2
	h := make(nats.Header, n)
	// One backing array for every header's value slice.
	vals := make([]string, 0, n)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	for k, v := range m.Headers {
		if !wire.NATSReserved(k) {
			set(k, v)
		}
	}
	for _, a := range attrs {
		set(wire.NATSHeader(a.Name), wire.NATSEncode(a.Value))
	}
	// The binding carries datacontenttype as ce-datacontenttype; content-type
	// is added for consumers that do not speak CloudEvents.
	set(wire.NATSHeader(wire.AttrDataContentType), wire.NATSEncode(e.ContentType))
	set(wire.NATSContentType, e.ContentType)
	return &nats.Msg{Subject: m.Destination, Data: e.Payload, Header: h}
}

// Publish sends the batch asynchronously and waits for every acknowledgement.
func (s *Sink) Publish(ctx context.Context, msgs []*sink.Message) []error {
	errs, ok := s.calls.EnterPublish(ctx, len(msgs), "nats", ErrClosed)
	if !ok {
		return errs
	}
	defer s.calls.Leave()
	setErr := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(msgs))
		}
		errs[i] = err
	}
	futures := make([]jetstream.PubAckFuture, len(msgs))
	stall := s.cfg.PublishTimeout
	for i, m := range msgs {
		if err := CheckSubject(m.Destination); err != nil {
			setErr(i, sink.MarkPermanent(err))
			continue
		}
		if err := CheckHeaders(m.Event.ID.String(), m.Headers); err != nil {
			setErr(i, sink.MarkPermanent(err))
			continue
		}
		f, err := s.js.PublishMsgAsync(Message(m), jetstream.WithMsgID(m.Event.ID.String()), jetstream.WithStallWait(stall))
		if err != nil {
			setErr(i, classify(err))
			continue
		}
		futures[i] = f
	}
	timeout := time.NewTimer(stall + time.Second)
	defer timeout.Stop()
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			setErr(i, classify(err))
		case <-timeout.C:
			setErr(i, errors.New("nats: publish: no acknowledgement in time"))
			timeout.Reset(0)
		case <-ctx.Done():
			setErr(i, ctx.Err())
		}
	}
	return errs
}

// SubjectError reports a destination that is not a subject a message can be
// published to. The sink fails such messages permanently, before sending.
type SubjectError struct {
	Subject string
	Reason  string
}

func (e *SubjectError) Error() string {
	return fmt.Sprintf("nats: invalid subject %q: %s (fix the route's destination, or the event fields its template renders)", e.Subject, e.Reason)
}

// Unwrap lets errors.Is match nats.ErrBadSubject.
func (e *SubjectError) Unwrap() error { return nats.ErrBadSubject }

// CheckSubject returns a *SubjectError unless subj is a literal subject: one
// or more non-empty tokens separated by '.', no white space, and no token
// that is a wildcard ('*' or '>'). Other characters (UTF-8 included) are
// allowed, as by the server.
func CheckSubject(subj string) error {
	if subj == "" {
		return &SubjectError{subj, "the subject is empty"}
	}
	token, start := 1, 0
	for i := 0; i <= len(subj); i++ {
		if i < len(subj) {
			switch c := subj[i]; c {
			case ' ', '\t', '\r', '\n', '\f', '\v':
				return &SubjectError{subj, fmt.Sprintf("white space (%q at byte %d) is not allowed in a subject", c, i)}
			case '.':
			default:
				continue
			}
		}
		switch tok := subj[start:i]; tok {
		case "":
			return &SubjectError{subj, fmt.Sprintf("token %d is empty (a leading, trailing or double '.')", token)}
		case "*", ">":
			return &SubjectError{subj, fmt.Sprintf("token %d is the wildcard %q: messages are published to literal subjects", token, tok)}
		}
		token, start = token+1, i+1
	}
	return nil
}

// classify marks errors that retrying cannot fix as permanent.
func classify(err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum):
		return sink.MarkPermanent(fmt.Errorf("nats: publish: message too large: %w", err))
	case errors.Is(err, nats.ErrBadSubject):
		return sink.MarkPermanent(fmt.Errorf("nats: publish: invalid subject: %w", err))
	case errors.Is(err, nats.ErrBadHeaderMsg):
		// Publishing refuses a header it cannot write (CheckHeaders
		// catches those first); a retry sends the same headers.
		return sink.MarkPermanent(fmt.Errorf("nats: publish: a header NATS cannot carry: %w", err))
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return sink.MarkPermanent(fmt.Errorf("nats: publish: no stream takes this subject (add it to the stream's subjects): %w", err))
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrPermissionViolation):
		return sink.MarkPermanent(fmt.Errorf("nats: publish: not authorised: %w", err))
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return sink.MarkPermanent(fmt.Errorf("nats: publish: message too large: %w", err))
	}
	return fmt.Errorf("nats: publish: %w", err)
}

// Ping reports whether the connection is up and JetStream answers.
func (s *Sink) Ping(ctx context.Context) error {
	if !s.nc.IsConnected() {
		return fmt.Errorf("nats: not connected (%s)", s.nc.Status())
	}
	if _, err := s.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	return nil
}

// Close turns away new Publish calls, waits for the ones in progress, and
// closes the connection. A second Close returns at once.
func (s *Sink) Close() error {
	if !s.calls.Close() {
		return nil
	}
	s.nc.Close()
	return nil
}
