package rabbitmq

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/internal/tcpproxy"
	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/sinktest"
	"github.com/outboxrelay/outbox/sdk/inbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newSink(t testing.TB, cfg Config) *Sink {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = testutil.AMQPURL(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// admin opens a connection of the test's own, closed when the test ends.
func admin(t testing.TB) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(testutil.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// newQueue declares a queue of the given type ("classic" or "quorum") bound
// to amq.direct under its own name, deleted when the test ends, and returns
// the destination "amq.direct/<queue>".
func newQueue(t testing.TB, kind string) string {
	t.Helper()
	q := testutil.RandomName("outbox-test-")
	ch := admin(t)
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": kind}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, q, "amq.direct", false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := amqp.Dial(testutil.AMQPURL(t))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err == nil {
			_, err = ch.QueueDelete(q, false, false, false)
		}
		if err != nil {
			t.Errorf("delete queue %s: %v", q, err)
		}
	})
	return "amq.direct/" + q
}

// consume reads the destination's queue with an independent consumer until
// it has at least min messages or ctx is done, then briefly for more.
func consume(ctx context.Context, t *testing.T, dest string, min int) []sinktest.Received {
	t.Helper()
	_, q := route(dest, "")
	ch := admin(t)
	ds, err := ch.ConsumeWithContext(ctx, q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []sinktest.Received
	for {
		wait := ctx.Done()
		var extra <-chan time.Time
		if len(got) >= min {
			extra = time.After(300 * time.Millisecond)
		}
		select {
		case d, ok := <-ds:
			if !ok {
				return got
			}
			got = append(got, received(d))
		case <-wait:
			return got
		case <-extra:
			return got
		}
	}
}

func received(d amqp.Delivery) sinktest.Received {
	got := sinktest.Received{
		ID:          d.MessageId,
		ContentType: d.ContentType,
		Payload:     d.Body,
		Attributes:  map[string]string{},
		Headers:     map[string]string{},
	}
	for k, v := range d.Headers {
		s, _ := v.(string)
		if name, ok := strings.CutPrefix(k, "cloudEvents_"); ok {
			got.Attributes[name] = s
		} else {
			got.Headers[k] = s
		}
	}
	got.Inbox, got.InboxErr = inbox.FromAMQP(inbox.AMQPMessage{Headers: d.Headers, ContentType: d.ContentType, MessageID: d.MessageId, Body: d.Body})
	return got
}

func TestContract(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{
		New:         func(t *testing.T) sink.Sink { return newSink(t, Config{}) },
		Destination: func(t *testing.T) string { return newQueue(t, "classic") },
		Consume:     consume,
		SDKReader:   true,
		Permanent: []sinktest.PermanentCase{
			{Name: "Unroutable", Break: func(t *testing.T, m *sink.Message) {
				m.Destination = "amq.direct/" + testutil.RandomName("no-queue-")
			}},
			{Name: "NoSuchQueue", Break: func(t *testing.T, m *sink.Message) {
				m.Destination = "/" + testutil.RandomName("no-queue-")
			}},
			{Name: "UnknownExchange", Break: func(t *testing.T, m *sink.Message) {
				m.Destination = testutil.RandomName("no-exchange-") + "/key"
			}},
		},
		Outage: outage,
	})
}

// outage puts a TCP proxy between the sink and the broker.
func outage(t *testing.T) sinktest.Outage {
	u, err := url.Parse(testutil.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	u.Host = p.Addr()
	return sinktest.Outage{
		Sink:        newSink(t, Config{URL: u.String(), DialTimeout: time.Second, ConfirmTimeout: 5 * time.Second}),
		Destination: newQueue(t, "classic"),
		Cut:         p.Cut,
		Restore:     p.Restore,
	}
}

func TestBlackholeOutage(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testutil.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	u.Host = p.Addr()
	s := newSink(t, Config{URL: u.String(), DialTimeout: 500 * time.Millisecond})
	defer s.Close()
	dest := newQueue(t, "classic")
	sinktest.Publish(t, s, sinktest.Batch(dest, sinktest.Keys("bh", 3), 0))

	p.Blackhole() // the open connection breaks; new ones hang
	start := time.Now()
	errs := s.Publish(context.Background(), sinktest.Batch(dest, sinktest.Keys("bh", 3), 1))
	if len(errs) != 3 || errs[0] == nil || sink.Permanent(errs[0]) {
		t.Fatalf("Publish into a blackhole = %v, want transient errors", errs)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Publish into a blackhole took %v; the dial timeout is 500ms", d)
	}
	p.Restore()
	sinktest.Publish(t, s, sinktest.Batch(dest, sinktest.Keys("bh", 3), 2))
}

func TestQuorumQueue(t *testing.T) {
	t.Parallel()
	s := newSink(t, Config{})
	defer s.Close()
	dest := newQueue(t, "quorum")
	msgs := sinktest.Batch(dest, sinktest.Keys("quorum", 50), 0)
	sinktest.Publish(t, s, msgs)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got := consume(ctx, t, dest, len(msgs)); len(got) != len(msgs) {
		t.Fatalf("consumed %d, want %d", len(got), len(msgs))
	}
}

// TestDefaultExchange: a destination without '/' is a queue name on the
// default exchange, or a routing key on Config.Exchange.
func TestDefaultExchange(t *testing.T) {
	t.Parallel()
	dest := newQueue(t, "classic")
	_, q := route(dest, "")
	for _, cfg := range []Config{{}, {Exchange: "amq.direct"}} {
		s := newSink(t, cfg)
		sinktest.Publish(t, s, sinktest.Batch(q, sinktest.Keys("bare", 2), 0))
		s.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got := consume(ctx, t, dest, 4); len(got) != 4 {
		t.Fatalf("consumed %d, want 4", len(got))
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	s := newSink(t, Config{MaxMessageBytes: 1000})
	defer s.Close()
	dest := newQueue(t, "classic")
	msgs := sinktest.Batch(dest, sinktest.Keys("large", 2), 0)
	msgs[0].Event.Payload = make([]byte, 1001)
	errs := s.Publish(context.Background(), msgs)
	if len(errs) != 2 || !sink.Permanent(errs[0]) || errs[1] != nil {
		t.Fatalf("Publish = %v, want a permanent error for the large message only", errs)
	}
}

func TestRoute(t *testing.T) {
	for _, tc := range []struct{ dest, def, ex, key string }{
		{"orders/order.created", "", "orders", "order.created"},
		{"orders/a/b", "", "orders", "a/b"},
		{"/jobs", "events", "", "jobs"},
		{"jobs", "", "", "jobs"},
		{"order.created", "events", "events", "order.created"},
		{"fanout/", "", "fanout", ""},
	} {
		ex, key := route(tc.dest, tc.def)
		if ex != tc.ex || key != tc.key {
			t.Errorf("route(%q, %q) = %q, %q; want %q, %q", tc.dest, tc.def, ex, key, tc.ex, tc.key)
		}
	}
}

func TestConfigAndSecrets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no url", Config{}, "url:"},
		{"bad scheme", Config{URL: "http://u:hunter2@h/"}, "url "},
		{"bad port", Config{URL: "amqp://u:hunter2@h:99x/"}, "url:"},
		{"bad escape", Config{URL: "amqp://u:hunter2%zz@h/"}, "url:"},
		{"control char", Config{URL: "amqp://u:hunter2\x7f@h/"}, "url:"},
		{"tls without amqps", Config{URL: "amqp://u:hunter2@h/", TLS: TLS{CAFile: "ca.pem"}}, "tls:"},
		{"tls ca", Config{URL: "amqps://u:hunter2@h/", TLS: TLS{CAFile: "/nonexistent/ca.pem"}}, "tls.ca_file:"},
		{"timeout", Config{URL: "amqp://u:hunter2@h/", ConfirmTimeout: -time.Second}, "confirm_timeout:"},
	} {
		_, err := New(context.Background(), tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.name, err, tc.want)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error shows the password: %v", tc.name, err)
		}
	}

	u, err := url.Parse(testutil.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("guest", "not-the-password")
	_, err = New(context.Background(), Config{URL: u.String(), DialTimeout: 2 * time.Second}, nil)
	if err == nil {
		t.Fatal("New with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "not-the-password") {
		t.Fatalf("error shows the password: %v", err)
	}
	t.Log(err)
}

// TestExchangeDeleted: an exchange deleted after the sink checked it closes
// the channel (404) under the batch; that batch fails transiently and the
// next one finds the exchange missing and fails permanently.
func TestExchangeDeleted(t *testing.T) {
	t.Parallel()
	ch := admin(t)
	ex := testutil.RandomName("outbox-test-ex-")
	if err := ch.ExchangeDeclare(ex, amqp.ExchangeFanout, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	dest := newQueue(t, "classic")
	_, q := route(dest, "")
	if err := ch.QueueBind(q, "", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, Config{})
	defer s.Close()
	sinktest.Publish(t, s, sinktest.Batch(ex+"/", sinktest.Keys("exdel", 3), 0))
	if err := ch.ExchangeDelete(ex, false, false); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	errs := s.Publish(ctx, sinktest.Batch(ex+"/", sinktest.Keys("exdel", 3), 1))
	if len(errs) != 3 || errs[0] == nil || sink.Permanent(errs[0]) {
		t.Fatalf("first Publish after the exchange went away = %v, want transient errors", errs)
	}
	t.Log(errs[0])
	errs = s.Publish(ctx, sinktest.Batch(ex+"/", sinktest.Keys("exdel", 3), 2))
	if len(errs) != 3 || !sink.Permanent(errs[0]) {
		t.Fatalf("second Publish = %v, want permanent errors", errs)
	}
	t.Log(errs[0])
	// The sink still works for other destinations.
	sinktest.Publish(t, s, sinktest.Batch(dest, sinktest.Keys("exdel", 3), 3))
}

// TestLogAttributes: every line names the configured sink as "sink" (the
// relay passes logger.With("sink", name)) and the kind as "type".
func TestLogAttributes(t *testing.T) {
	t.Parallel()
	logger, logs := sinktest.NewLogs("orders-rabbit")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, Config{URL: testutil.AMQPURL(t)}, logger)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	logs.Check(t, "orders-rabbit", "rabbitmq")
}
