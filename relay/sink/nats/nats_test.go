package nats

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/internal/tcpproxy"
	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/sinktest"
	"github.com/outboxrelay/outbox/sdk/inbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture is one JetStream stream taking every subject under prefix.
type fixture struct {
	url, stream, prefix string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{url: testutil.NATSURL(t), stream: strings.ToUpper(testutil.RandomName("SINK_")), prefix: testutil.RandomName("sink")}
	t.Cleanup(func() {
		nc, err := nats.Connect(f.url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		js.DeleteStream(context.Background(), f.stream)
	})
	return f
}

func (f *fixture) sink(t testing.TB, url string, timeout time.Duration) *Sink {
	t.Helper()
	s, err := New(context.Background(), Config{URL: url, Stream: f.stream, Subjects: []string{f.prefix + ".>"}, PublishTimeout: timeout},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) consume(ctx context.Context, t *testing.T, dest string, min int) []sinktest.Received {
	t.Helper()
	nc, err := nats.Connect(f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cons, err := js.OrderedConsumer(ctx, f.stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{dest}})
	if err != nil {
		t.Fatal(err)
	}
	var out []sinktest.Received
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			break
		}
		n := 0
		for m := range batch.Messages() {
			n++
			r := received(m.Headers(), m.Data())
			r.Inbox, r.InboxErr = inbox.FromNATS(m.Headers(), m.Data())
			out = append(out, r)
		}
		if n == 0 && len(out) >= min {
			break
		}
	}
	return out
}

func received(h nats.Header, data []byte) sinktest.Received {
	got := sinktest.Received{Attributes: map[string]string{}, Headers: map[string]string{}, Payload: data}
	for k, vs := range h {
		v := vs[0]
		switch {
		case k == "Nats-Msg-Id":
			got.ID = v
		case k == "ce-datacontenttype":
			got.ContentType, _ = url.PathUnescape(v)
		case strings.HasPrefix(k, "ce-"):
			dv, _ := url.PathUnescape(v)
			got.Attributes[k[3:]] = dv
		case k == "content-type" || strings.HasPrefix(k, "Nats-"):
		default:
			got.Headers[k] = v
		}
	}
	return got
}

func TestContract(t *testing.T) {
	f := newFixture(t)
	sinktest.Run(t, sinktest.Harness{
		New:         func(t *testing.T) sink.Sink { return f.sink(t, f.url, 10*time.Second) },
		Destination: func(t *testing.T) string { return f.prefix + "." + testutil.RandomName("d") },
		Consume:     f.consume,
		SDKReader:   true,
		Permanent: []sinktest.PermanentCase{
			{Name: "NoStreamForSubject", Break: func(t *testing.T, m *sink.Message) {
				m.Destination = testutil.RandomName("nostream") + ".x"
			}},
			{Name: "TooLarge", Break: func(t *testing.T, m *sink.Message) {
				ev := *m.Event
				ev.Payload = make([]byte, 2<<20) // over the server's max_payload (1 MiB)
				m.Event = &ev
			}},
		},
		Outage: func(t *testing.T) sinktest.Outage {
			u, _ := url.Parse(f.url)
			p, err := tcpproxy.New(u.Host)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			return sinktest.Outage{
				Sink:        f.sink(t, "nats://"+p.Addr(), 2*time.Second),
				Destination: f.prefix + "." + testutil.RandomName("outage"),
				Cut:         p.Cut,
				Restore:     p.Restore,
			}
		},
	})
}

func TestSubjectsFor(t *testing.T) {
	var ds []*relay.Destination
	for _, s := range []string{"orders.{{.EventType}}", "audit", "{{.AggregateType}}.x", "orders.{{.AggregateID}}"} {
		d, err := relay.ParseDestination(s)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if got := strings.Join(SubjectsFor(ds), " "); got != "orders.> audit >" {
		t.Errorf("SubjectsFor = %q", got)
	}
}

func BenchmarkMessage(b *testing.B) {
	m := sinktest.NewMessage("orders.created", "order:1", 1)
	b.ReportAllocs()
	for b.Loop() {
		Message(m)
	}
}

// TestReservedHeaders: an event header that a reader would take for an
// attribute or the content type, or that JetStream acts on (Nats-*), is not
// sent; the others are.
func TestReservedHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.sink(t, f.url, 10*time.Second)
	defer s.Close()
	dest := f.prefix + ".reserved"
	m := sinktest.NewMessage(dest, "k", 0)
	m.Headers = map[string]string{
		"Nats-Expected-Stream": "NOT_" + f.stream, // JetStream would refuse the message
		"nats-rollup":          "all",
		"Ce-Type":              "spoofed",
		"Content-Type":         "text/evil",
		"x-ok":                 "kept",
	}
	sinktest.Publish(t, s, []*sink.Message{m})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := f.consume(ctx, t, dest, 1)
	if len(got) != 1 {
		t.Fatalf("consumed %d messages, want 1", len(got))
	}
	env, err := got[0].Inbox, got[0].InboxErr
	if err != nil {
		t.Fatal(err)
	}
	if env.EventType != m.Event.EventType || env.ContentType != m.Event.ContentType || len(env.Headers) != 1 || env.Headers["x-ok"] != "kept" {
		t.Errorf("read back type %q, content type %q, headers %v; want %q, %q, only x-ok",
			env.EventType, env.ContentType, env.Headers, m.Event.EventType, m.Event.ContentType)
	}
}

// TestLogAttributes: every line names the configured sink as "sink" (the
// relay passes logger.With("sink", name)) and the kind as "type".
func TestLogAttributes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	logger, logs := sinktest.NewLogs("orders-nats")
	s, err := New(context.Background(), Config{URL: f.url, Stream: f.stream, Subjects: []string{f.prefix + ".>"}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	logs.Check(t, "orders-nats", "nats")
}

// TestInvalidSubject: a rendered destination that is no valid subject fails
// permanently with an error that says why, not with "no stream takes this
// subject"; the good messages of the batch are delivered.
func TestInvalidSubject(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.sink(t, f.url, 10*time.Second)
	defer s.Close()
	p := f.prefix
	cases := map[string]string{
		p + "..x":    "is empty (a leading, trailing or double",
		p + ".x.":    "is empty (a leading, trailing or double",
		"." + p:      "is empty (a leading, trailing or double",
		p + ".a b":   "white space",
		p + ".a\tb":  "white space",
		p + ".a\r\n": "white space",
		p + ".*":     "wildcard",
		p + ".>":     "wildcard",
		p + ".*.x":   "wildcard",
		"":           "empty",
	}
	var msgs []*sink.Message
	var subjects []string
	for subj := range cases {
		msgs = append(msgs, sinktest.NewMessage(subj, "k-"+subj, 0))
		subjects = append(subjects, subj)
	}
	good := sinktest.NewMessage(p+".good", "good", 0)
	msgs = append(msgs, good)
	errs := s.Publish(context.Background(), msgs)
	if len(errs) != len(msgs) {
		t.Fatalf("Publish = %v, want one result per message", errs)
	}
	for i, subj := range subjects {
		err := errs[i]
		if !sink.Permanent(err) || !strings.Contains(err.Error(), "invalid subject") || !strings.Contains(err.Error(), cases[subj]) ||
			strings.Contains(err.Error(), "no stream") {
			t.Errorf("subject %q: got %v, want a permanent error saying the subject is invalid (%s)", subj, err, cases[subj])
		}
	}
	if err := errs[len(errs)-1]; err != nil {
		t.Errorf("good subject: %v", err)
	}
	// Tokens with characters that are only unusual are valid.
	for _, subj := range []string{p + ".ünï-cödé_1", p + ".a*b.c>d", p + ".x"} {
		if errs := s.Publish(context.Background(), []*sink.Message{sinktest.NewMessage(subj, "ok", 0)}); errs != nil {
			t.Errorf("subject %q: %v", subj, errs[0])
		}
	}
}

// holdJS holds the async publish of one subject until release is closed.
type holdJS struct {
	jetstream.JetStream
	subject string
	entered chan struct{}
	release chan struct{}
}

func (h *holdJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if m.Subject == h.subject {
		close(h.entered)
		<-h.release
	}
	return h.JetStream.PublishMsgAsync(m, opts...)
}

// TestCloseWaitsForPublish: Close lets a Publish in progress finish over the
// open connection (its messages are accepted, not failed by Close), and
// turns away the Publish calls that come after it.
func TestCloseWaitsForPublish(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.sink(t, f.url, 10*time.Second)
	held := f.prefix + ".held"
	h := &holdJS{JetStream: s.js, subject: held, entered: make(chan struct{}), release: make(chan struct{})}
	s.js = h

	inFlight := []*sink.Message{sinktest.NewMessage(held, "held", 0), sinktest.NewMessage(f.prefix+".next", "next", 0)}
	var inFlightErrs []error
	published := make(chan struct{})
	go func() {
		inFlightErrs = s.Publish(context.Background(), inFlight)
		close(published)
	}()
	<-h.entered

	closed := make(chan error, 1)
	go func() {
		err := s.Close()
		select {
		case <-published:
		default:
			t.Error("Close returned while a Publish was in progress")
		}
		closed <- err
	}()
	// Once Close has begun, a new Publish fails: retried by the relay, not
	// dead-lettered.
	probe := f.prefix + ".probe"
	for seq := 0; ; seq++ {
		errs := s.Publish(context.Background(), []*sink.Message{sinktest.NewMessage(probe, "probe", seq)})
		if errs == nil {
			continue
		}
		if len(errs) != 1 || !errors.Is(errs[0], ErrClosed) || sink.Permanent(errs[0]) {
			t.Fatalf("Publish after Close = %v, want ErrClosed, not permanent", errs)
		}
		break
	}
	close(h.release)
	<-published
	if inFlightErrs != nil {
		t.Errorf("Publish in progress when Close was called = %v, want every message accepted", inFlightErrs)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got := f.consume(ctx, t, held, 1); len(got) != 1 {
		t.Errorf("consumed %d messages of the Publish in progress, want 1", len(got))
	}
}

// TestConnectErrorHidesPassword: the error of a URL that does not parse or
// connect names the URL without its password, in every URL of the list.
func TestConnectErrorHidesPassword(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"nats://relay:hunter2%zz@127.0.0.1:4222",
		"nats://relay:hunter2@127.0.0.1:1, nats://relay:hunter2%zz@127.0.0.1:2",
		"nats://relay:hunter2@[::1",
	} {
		_, err := New(context.Background(), Config{URL: u, Stream: "S"}, slog.New(slog.DiscardHandler))
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("New(url %q): got %v, want an error without the password", u, err)
		}
	}
}
