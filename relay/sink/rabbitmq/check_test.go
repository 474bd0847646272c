package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/sinktest"
)

// TestUnsendableFields: a message with a field AMQP 0-9-1 cannot carry (a
// short string that is not UTF-8 or is over 255 bytes, headers larger than a
// frame) fails permanently with an error naming the field, before anything
// is sent: RabbitMQ (or amqp091-go) would close the connection under every
// message on it, on every attempt, and the key would never move. The
// connection stays up and the batch's other messages are delivered.
func TestUnsendableFields(t *testing.T) {
	t.Parallel()
	s := newSink(t, Config{})
	defer s.Close()
	dest := newQueue(t, "classic")
	_, q := route(dest, "")
	many := map[string]string{}
	for i := range 3000 {
		many[fmt.Sprintf("x-h%04d", i)] = strings.Repeat("v", 40)
	}
	for _, tc := range []struct {
		name, field string
		brk         func(m *sink.Message)
	}{
		{"exchange not UTF-8", "exchange", func(m *sink.Message) { m.Destination = "ключ"[:1] + "-ex/k" }},
		{"exchange over 255 bytes", "exchange", func(m *sink.Message) { m.Destination = strings.Repeat("e", 256) + "/k" }},
		{"routing key not UTF-8", "routing key", func(m *sink.Message) { m.Destination = dest + "\xff" }},
		{"routing key over 255 bytes", "routing key", func(m *sink.Message) { m.Destination = "amq.direct/" + strings.Repeat("k", 256) }},
		{"header name not UTF-8", "header name", func(m *sink.Message) { m.Headers["h\xff"] = "v" }},
		{"header name over 255 bytes", "header name", func(m *sink.Message) { m.Headers[strings.Repeat("h", 256)] = "v" }},
		{"content type over 255 bytes", "content_type", func(m *sink.Message) { m.Event.ContentType = "application/" + strings.Repeat("x", 250) }},
		{"content type not UTF-8", "content_type", func(m *sink.Message) { m.Event.ContentType = "text/\xc3(" }},
		{"event type over 255 bytes", "type", func(m *sink.Message) { m.Event.EventType = strings.Repeat("t", 256) }},
		{"headers over frame_max", "headers", func(m *sink.Message) { m.Headers = many }},
	} {
		s.mu.Lock()
		conn := s.conn
		s.mu.Unlock()
		msgs := sinktest.Batch(dest, sinktest.Keys("field-"+strings.ReplaceAll(tc.name, " ", "-"), 3), 0)
		tc.brk(msgs[1])
		errs := s.Publish(context.Background(), msgs)
		var ferr *FieldError
		switch {
		case len(errs) != 3:
			t.Errorf("%s: Publish = %v, want 3 results", tc.name, errs)
			continue
		case errs[0] != nil || errs[2] != nil:
			t.Errorf("%s: the batch's good messages failed: %v, %v", tc.name, errs[0], errs[2])
		case !sink.Permanent(errs[1]) || !errors.As(errs[1], &ferr):
			t.Errorf("%s: got %v, want a permanent *FieldError", tc.name, errs[1])
		case !strings.Contains(ferr.Field, tc.field) || !strings.Contains(errs[1].Error(), msgs[1].Event.ID.String()):
			t.Errorf("%s: error %q does not name the field %q and the event", tc.name, errs[1], tc.field)
		default:
			t.Logf("%s: %s", tc.name, errs[1])
		}
		if conn.IsClosed() {
			t.Errorf("%s: the connection was closed", tc.name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got := consume(ctx, t, dest, 20); len(got) != 20 {
		t.Errorf("queue %s: consumed %d, want the 20 good messages", q, len(got))
	}

	// NUL is valid UTF-8: RabbitMQ answers an exchange name with NUL that
	// does not exist like any other, on the channel only.
	m := sinktest.NewMessage("nul\x00-ex/k", "field-nul", 0)
	errs := s.Publish(context.Background(), []*sink.Message{m})
	var uerr *UnknownExchangeError
	if len(errs) != 1 || !sink.Permanent(errs[0]) || !errors.As(errs[0], &uerr) {
		t.Errorf("exchange with NUL: Publish = %v, want a permanent *UnknownExchangeError", errs)
	}
}

// TestHeaderFrameLimit: the sink's size of the content header frame is the
// broker's: a message whose properties and headers fill a frame exactly (by
// the AMQP spec: frame_max less the frame's own 8 bytes) is delivered, one
// byte more is refused before sending; and a frame over frame_max sent anyway
// (by a plain client) makes RabbitMQ close the connection, reporting the size
// the sink computes.
func TestHeaderFrameLimit(t *testing.T) {
	t.Parallel()
	s := newSink(t, Config{})
	defer s.Close()
	dest := newQueue(t, "classic")
	s.mu.Lock()
	frameMax := s.conn.Config.FrameSize
	s.mu.Unlock()
	if frameMax == 0 {
		t.Skip("the broker sets no frame_max")
	}
	// filled returns a message whose content header frame payload is size
	// bytes by the sink's count.
	filled := func(size int) *sink.Message {
		m := sinktest.NewMessage(dest, "frame", size)
		m.Headers["fill"] = ""
		p := publishing(m)
		m.Headers["fill"] = strings.Repeat("f", size-headerFrameSize(&p))
		return m
	}
	exact := filled(frameMax - frameOverhead)
	sinktest.Publish(t, s, []*sink.Message{exact})
	errs := s.Publish(context.Background(), []*sink.Message{filled(frameMax - frameOverhead + 1)})
	var ferr *FieldError
	if len(errs) != 1 || !errors.As(errs[0], &ferr) {
		t.Fatalf("one byte over the frame: Publish = %v, want a *FieldError", errs)
	}
	t.Log(errs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got := consume(ctx, t, dest, 1); len(got) != 1 || got[0].ID != exact.Event.ID.String() {
		t.Fatalf("consumed %v, want the message that fills the frame", got)
	}

	// The limit is the broker's. (RabbitMQ 3.10 tolerates a payload up to
	// frame_max itself, 8 bytes more than the spec allows; its error names
	// the payload's size.)
	conn, err := amqp.Dial(testutil.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	exchange, key := route(dest, "")
	size := frameMax + 1
	// The write itself may fail, when the broker's close arrives first.
	perr := ch.PublishWithContext(ctx, exchange, key, false, false, publishing(filled(size)))
	select {
	case err := <-closed:
		if !strings.Contains(err.Error(), fmt.Sprintf("frame_too_large,%d,", size)) {
			t.Errorf("RabbitMQ closed the connection with %v; want frame_too_large naming the size the sink computes, %d", err, size)
		}
		t.Logf("RabbitMQ closed the plain client's connection: %v (publish: %v)", err, perr)
	case <-ctx.Done():
		t.Fatal("RabbitMQ took a content header frame over frame_max")
	}
}
