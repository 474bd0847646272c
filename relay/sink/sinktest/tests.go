package sinktest

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/relay/sink"
)

const (
	consumeTimeout = 20 * time.Second
	publishTimeout = 30 * time.Second
)

// newSink makes a sink that is closed when the test ends.
func newSink(t *testing.T, h Harness) sink.Sink {
	t.Helper()
	s := h.New(t)
	t.Cleanup(func() { s.Close() })
	return s
}

// checkShape fails the test unless errs has one entry per message or is nil.
func checkShape(t *testing.T, errs []error, n int) {
	t.Helper()
	if errs != nil && len(errs) != n {
		t.Fatalf("Publish returned %d results for %d messages", len(errs), n)
	}
}

// Publish publishes msgs and fails the test on any error.
func Publish(t testing.TB, s sink.Sink, msgs []*sink.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	errs := s.Publish(ctx, msgs)
	if errs != nil && len(errs) != len(msgs) {
		t.Fatalf("Publish returned %d results for %d messages", len(errs), len(msgs))
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Publish: message %d (%s to %q): %v (permanent=%v)", i, msgs[i].Event.ID, msgs[i].Destination, err, sink.Permanent(err))
		}
	}
}

func consume(t *testing.T, h Harness, dest string, min int) []Received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), consumeTimeout)
	defer cancel()
	got := h.Consume(ctx, t, dest, min)
	if len(got) < min {
		t.Fatalf("consumed %d messages from %q, want at least %d", len(got), dest, min)
	}
	return got
}

// index maps event ids to messages.
func index(msgs ...[]*sink.Message) map[string]*sink.Message {
	m := make(map[string]*sink.Message)
	for _, ms := range msgs {
		for _, msg := range ms {
			m[msg.Event.ID.String()] = msg
		}
	}
	return m
}

// CheckMessage reports every difference between what was published (m) and
// what a consumer received (got): the event id, ordering key (when the
// binding carries one), every CloudEvents attribute, content type, headers
// (Message.Headers, which the relay may have given its own trace context)
// and payload.
func CheckMessage(t testing.TB, got Received, m *sink.Message) {
	t.Helper()
	e := m.Event
	if got.ID != e.ID.String() {
		t.Errorf("id: got %q, want %q", got.ID, e.ID)
	}
	if got.Key != "" && got.Key != e.Key() {
		t.Errorf("%s: key: got %q, want %q", e.ID, got.Key, e.Key())
	}
	for _, a := range sink.CloudEvents(m) {
		v, ok := got.Attributes[a.Name]
		if !ok {
			t.Errorf("%s: attribute %q missing (got %v)", e.ID, a.Name, got.Attributes)
		} else if v != a.Value {
			t.Errorf("%s: attribute %q: got %q, want %q", e.ID, a.Name, v, a.Value)
		}
	}
	if sink.TimeAttribute(e).Name != sink.CETime {
		if v, ok := got.Attributes[sink.CETime]; ok {
			t.Errorf("%s: attribute time = %q present for an occurred_at RFC 3339 cannot hold", e.ID, v)
		}
	}
	if e.TenantID == "" {
		if v, ok := got.Attributes[sink.CETenantID]; ok {
			t.Errorf("%s: attribute tenantid = %q present for an event without tenant", e.ID, v)
		}
	}
	if got.ContentType != e.ContentType {
		t.Errorf("%s: content type: got %q, want %q", e.ID, got.ContentType, e.ContentType)
	}
	for k, v := range m.Headers {
		if gv, ok := got.Headers[k]; !ok {
			t.Errorf("%s: header %q missing (got %v)", e.ID, k, got.Headers)
		} else if gv != v {
			t.Errorf("%s: header %q: got %q, want %q", e.ID, k, gv, v)
		}
	}
	if !bytes.Equal(got.Payload, e.Payload) {
		t.Errorf("%s: payload: got %q, want %q", e.ID, got.Payload, e.Payload)
	}
}

// CheckInbox reports every difference between what was published (m) and
// what the SDK's reader made of the received message (got.Inbox): the
// application reads back the event it wrote, with the message's headers
// (Message.Headers) and the trace context in them.
func CheckInbox(t testing.TB, got Received, m *sink.Message) {
	t.Helper()
	e := m.Event
	if got.InboxErr != nil {
		t.Errorf("%s: the SDK's reader failed: %v", e.ID, got.InboxErr)
		return
	}
	env := got.Inbox
	for _, f := range []struct{ name, got, want string }{
		{"ID", env.ID.String(), e.ID.String()},
		{"EventType", env.EventType, e.EventType},
		{"AggregateType", env.AggregateType, e.AggregateType},
		{"AggregateID", env.AggregateID, e.AggregateID},
		{"SchemaVersion", env.SchemaVersion, e.SchemaVersion},
		{"TenantID", env.TenantID, e.TenantID},
		{"ContentType", env.ContentType, e.ContentType},
		{"Source", env.Source, m.Source},
		{"SpecVersion", env.SpecVersion, "1.0"},
	} {
		if f.got != f.want {
			t.Errorf("%s: SDK reader: %s = %q, want %q", e.ID, f.name, f.got, f.want)
		}
	}
	if !env.OccurredAt.Equal(e.OccurredAt) || env.OccurredAtInf != e.OccurredAtInf {
		t.Errorf("%s: SDK reader: OccurredAt = %v (%v), want %v (%v)", e.ID, env.OccurredAt, env.OccurredAtInf, e.OccurredAt, e.OccurredAtInf)
	}
	if !bytes.Equal(env.Payload, e.Payload) {
		t.Errorf("%s: SDK reader: Payload = %q, want %q", e.ID, env.Payload, e.Payload)
	}
	if !maps.Equal(env.Headers, m.Headers) {
		t.Errorf("%s: SDK reader: Headers = %q, want %q", e.ID, env.Headers, m.Headers)
	}
	if tp, ok := m.Headers["traceparent"]; ok {
		sc := trace.SpanContextFromContext(env.TraceContext(context.Background()))
		if want := strings.Split(tp, "-"); len(want) != 4 || sc.TraceID().String() != want[1] || sc.SpanID().String() != want[2] ||
			sc.TraceState().String() != m.Headers["tracestate"] {
			t.Errorf("%s: SDK reader: trace context %v/%v/%q, want the one of traceparent %q, tracestate %q",
				e.ID, sc.TraceID(), sc.SpanID(), sc.TraceState().String(), tp, m.Headers["tracestate"])
		}
	}
}

// checkExactlyOnce checks that every message in want was received exactly
// once and nothing else was; it returns the received messages per key in
// arrival order.
func checkExactlyOnce(t *testing.T, got []Received, want map[string]*sink.Message) map[string][]*sink.Message {
	t.Helper()
	seen := make(map[string]int, len(got))
	perKey := make(map[string][]*sink.Message)
	for _, r := range got {
		m, ok := want[r.ID]
		if !ok {
			t.Errorf("received unknown id %q", r.ID)
			continue
		}
		seen[r.ID]++
		if seen[r.ID] == 2 {
			t.Errorf("received %s more than once", r.ID)
		}
		perKey[m.Event.Key()] = append(perKey[m.Event.Key()], m)
	}
	missing := 0
	for id := range want {
		if seen[id] == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d messages not received", missing, len(want))
	}
	return perKey
}

// checkOrder checks that each key's messages arrived in the order they were
// published (pos gives each message's publish position).
func checkOrder(t *testing.T, perKey map[string][]*sink.Message, pos map[*sink.Message]int) {
	t.Helper()
	for key, ms := range perKey {
		for i := 1; i < len(ms); i++ {
			if pos[ms[i]] < pos[ms[i-1]] {
				t.Errorf("key %s: message published at %d arrived after the one published at %d", key, pos[ms[i-1]], pos[ms[i]])
				break
			}
		}
	}
}

func testEnvelope(t *testing.T, h Harness) {
	s := newSink(t, h)
	dest := h.Destination(t)

	full := NewMessage(dest, "env-1", 0)
	full.Event.TenantID = "acme"
	full.Event.Headers["tracestate"] = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
	full.Event.Headers["x-user-id"] = "alice"
	// The relay sends Message.Headers: the event's headers with its own
	// delivery span as the trace context.
	full.Headers = map[string]string{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01",
		"tracestate":  "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
		"x-user-id":   "alice",
	}

	bare := NewMessage(dest, "env-2", 0)
	bare.Event.Headers = nil
	bare.Headers = nil
	bare.Event.Payload = []byte{0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, '\r', '\n'}
	bare.Event.ContentType = "application/x-protobuf"
	bare.Event.SchemaVersion = "2.3"

	odd := NewMessage(dest, "ordre n° 3 \"quoted\" €", 0)
	odd.Event.AggregateType = "Order Line"
	odd.Event.EventType = "order.line.added"
	odd.Event.ContentType = "text/plain; charset=utf-8"
	odd.Event.Payload = []byte("plain text, ünïcödé\n")
	odd.Headers["x-note"] = "a value with spaces, \"quotes\" and 100% ünïcödé"
	odd.Event.OccurredAt = time.Date(2024, 2, 29, 23, 59, 59, 123456789, time.FixedZone("CET", 3600))

	// Not JSON: binary protobuf with NUL bytes, a full trace context and
	// user headers beyond ASCII.
	proto := NewMessage(dest, "env-4", 0)
	proto.Event.AggregateType = "invoice"
	proto.Event.EventType = "invoice.issued"
	proto.Event.ContentType = "application/protobuf"
	proto.Event.Payload = []byte{0x0a, 0x00, 0x12, 0x03, 'a', 0x00, 'b', 0xff, 0x00, 0x80}
	proto.Event.SchemaVersion = "3.1"
	proto.Event.TenantID = "mandant-ü"
	proto.Headers = map[string]string{
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01",
		"tracestate":  "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
		"x-kunde":     "Müller ✓ 東京",
		"baggage":     "userId=alice,serverNode=DF%2028",
	}
	proto.Event.Headers = proto.Headers

	// occurred_at that RFC 3339 cannot hold: the occurredat attribute
	// carries it instead of time.
	forever := NewMessage(dest, "forever", 0)
	forever.Event.OccurredAt, forever.Event.OccurredAtInf = time.Time{}, pgtype.Infinity
	far := NewMessage(dest, "far", 0)
	far.Event.OccurredAt = time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC)

	msgs := []*sink.Message{full, bare, odd, proto, forever, far}
	Publish(t, s, msgs)
	got := consume(t, h, dest, len(msgs))
	want := index(msgs)
	checkExactlyOnce(t, got, want)
	for _, r := range got {
		if m, ok := want[r.ID]; ok {
			CheckMessage(t, r, m)
			if h.SDKReader {
				CheckInbox(t, r, m)
			}
		}
	}
}

func testEmptyBatch(t *testing.T, h Harness) {
	s := newSink(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if errs := s.Publish(ctx, nil); len(errs) != 0 {
		t.Fatalf("Publish(nil) = %v, want no results", errs)
	}
	if errs := s.Publish(ctx, []*sink.Message{}); len(errs) != 0 {
		t.Fatalf("Publish(empty) = %v, want no results", errs)
	}
}

func testOrderPerKey(t *testing.T, h Harness) {
	s := newSink(t, h)
	dest := h.Destination(t)
	keys := Keys("ord", 16)
	const rounds = 30
	var all []*sink.Message
	pos := make(map[*sink.Message]int)
	for seq := range rounds {
		// Each round is one batch of a random subset of the keys in random
		// order: consecutive messages of one key sit in different batches.
		ks := append([]string(nil), keys...)
		rand.Shuffle(len(ks), func(i, j int) { ks[i], ks[j] = ks[j], ks[i] })
		ks = ks[:4+rand.IntN(len(ks)-3)]
		batch := Batch(dest, ks, seq)
		for _, m := range batch {
			pos[m] = len(all)
			all = append(all, m)
		}
		Publish(t, s, batch)
	}
	got := consume(t, h, dest, len(all))
	perKey := checkExactlyOnce(t, got, index(all))
	checkOrder(t, perKey, pos)
}

func testConcurrent(t *testing.T, h Harness) {
	s := newSink(t, h)
	dest := h.Destination(t)
	const (
		workers = 6
		batches = 8
		size    = 40
	)
	var (
		mu  sync.Mutex
		all []*sink.Message
		pos = make(map[*sink.Message]int)
		wg  sync.WaitGroup
	)
	for w := range workers {
		keys := Keys(fmt.Sprintf("conc%d", w), size)
		wg.Go(func() {
			for seq := range batches {
				batch := Batch(dest, keys, seq)
				mu.Lock()
				for _, m := range batch {
					pos[m] = len(all)
					all = append(all, m)
				}
				mu.Unlock()
				Publish(t, s, batch)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	got := consume(t, h, dest, len(all))
	perKey := checkExactlyOnce(t, got, index(all))
	checkOrder(t, perKey, pos)
}

func testPermanent(t *testing.T, h Harness, pc PermanentCase) {
	s := newSink(t, h)
	dest := h.Destination(t)
	msgs := Batch(dest, Keys("perm", 3), 0)
	pc.Break(t, msgs[1])
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	errs := s.Publish(ctx, msgs)
	if len(errs) != len(msgs) {
		t.Fatalf("Publish returned %d results for 3 messages (one bad), want 3", len(errs))
	}
	if errs[1] == nil {
		t.Fatal("the broken message was accepted")
	}
	if !sink.Permanent(errs[1]) {
		t.Errorf("the broken message failed with %q, which is not permanent", errs[1])
	}
	for _, i := range []int{0, 2} {
		if errs[i] != nil {
			t.Errorf("good message %d in a batch with a bad one: %v", i, errs[i])
		}
	}
	t.Logf("permanent error: %v", errs[1])
	got := consume(t, h, dest, 2)
	good := index([]*sink.Message{msgs[0], msgs[2]})
	checkExactlyOnce(t, got, good)
}

func testCanceled(t *testing.T, h Harness) {
	s := newSink(t, h)
	dest := h.Destination(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	msgs := Batch(dest, Keys("cancel", 5), 0)
	start := time.Now()
	errs := s.Publish(ctx, msgs)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Publish with a canceled context took %v", d)
	}
	checkShape(t, errs, len(msgs))
	for i, err := range errs {
		if err != nil && sink.Permanent(err) {
			t.Errorf("message %d: a canceled context gave a permanent error: %v", i, err)
		}
	}
	// The sink still works.
	more := Batch(dest, Keys("after", 3), 0)
	Publish(t, s, more)
}

func testAfterClose(t *testing.T, h Harness) {
	s := h.New(t)
	dest := h.Destination(t)
	msgs := Batch(dest, Keys("close", 3), 0)
	Publish(t, s, msgs)
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	late := Batch(dest, Keys("late", 2), 0)
	errs := s.Publish(ctx, late)
	if len(errs) != len(late) {
		t.Fatalf("Publish after Close returned %v, want one error per message", errs)
	}
	for i, err := range errs {
		if err == nil {
			t.Errorf("message %d: Publish after Close succeeded", i)
		} else if sink.Permanent(err) {
			t.Errorf("message %d: Publish after Close gave a permanent error (it would be dead-lettered): %v", i, err)
		}
	}
	s.Close() // a second Close must not panic
	got := consume(t, h, dest, len(msgs))
	checkExactlyOnce(t, got, index(msgs))
}

func testCloseWhilePublishing(t *testing.T, h Harness) {
	s := h.New(t)
	dest := h.Destination(t)
	var (
		mu       sync.Mutex
		accepted []*sink.Message
		wg       sync.WaitGroup
		closed   = make(chan struct{})
		started  = make(chan struct{}, 4)
	)
	for w := range 4 {
		keys := Keys(fmt.Sprintf("cwp%d", w), 20)
		wg.Go(func() {
			ok := 0
			for seq := 0; ; seq++ {
				select {
				case <-closed:
					// Publish after Close returned: every message must fail.
					errs := s.Publish(context.Background(), Batch(dest, keys, seq))
					if len(errs) != len(keys) {
						t.Errorf("Publish after Close returned %d results, want %d errors", len(errs), len(keys))
					}
					for _, err := range errs {
						if err == nil || sink.Permanent(err) {
							t.Errorf("Publish after Close: got %v, want a non-permanent error", err)
						}
					}
					return
				default:
				}
				batch := Batch(dest, keys, seq)
				ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
				errs := s.Publish(ctx, batch)
				cancel()
				if errs != nil && len(errs) != len(batch) {
					t.Errorf("Publish returned %d results for %d messages", len(errs), len(batch))
					return
				}
				mu.Lock()
				for i, m := range batch {
					if errs == nil || errs[i] == nil {
						accepted = append(accepted, m)
					} else if sink.Permanent(errs[i]) {
						t.Errorf("Publish during Close gave a permanent error: %v", errs[i])
					}
				}
				mu.Unlock()
				if seq == 0 {
					started <- struct{}{}
				}
				// Failing publishes spin fast while Close waits for the
				// ones in flight; only successes count against Close.
				if errs == nil {
					ok++
				}
				if ok > 500 {
					t.Error("Publish kept succeeding after Close")
					return
				}
			}
		})
	}
	for range 4 {
		<-started
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(publishTimeout):
		t.Fatal("Close did not return")
	}
	close(closed)
	wg.Wait()
	mu.Lock()
	n := len(accepted)
	want := index(accepted)
	mu.Unlock()
	// Every message reported as accepted must have arrived.
	got := consume(t, h, dest, n)
	seen := make(map[string]bool, len(got))
	for _, r := range got {
		seen[r.ID] = true
	}
	lost := 0
	for id := range want {
		if !seen[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d messages reported accepted did not arrive", lost, n)
	}
	t.Logf("%d messages accepted before Close", n)
}

func testOutage(t *testing.T, h Harness) {
	o := h.Outage(t)
	t.Cleanup(func() { o.Sink.Close() })
	var accepted []*sink.Message
	keys := Keys("outage", 5)
	before := Batch(o.Destination, keys, 0)
	Publish(t, o.Sink, before)
	accepted = append(accepted, before...)

	// Cut the broker off while a large batch is in flight: Publish must
	// return, with no message reported as a permanent failure.
	big := Batch(o.Destination, Keys("inflight", 2000), 0)
	done := make(chan []error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		defer cancel()
		done <- o.Sink.Publish(ctx, big)
	}()
	time.Sleep(2 * time.Millisecond)
	o.Cut()
	cutAt := time.Now()
	select {
	case errs := <-done:
		checkShape(t, errs, len(big))
		failed := 0
		for i, err := range errs {
			if err == nil {
				continue
			}
			failed++
			if sink.Permanent(err) {
				t.Fatalf("message %d of a batch in flight when the broker went away: permanent error %v", i, err)
			}
		}
		for i, m := range big {
			if errs == nil || errs[i] == nil {
				accepted = append(accepted, m)
			}
		}
		t.Logf("batch in flight during the cut: %d of %d failed", failed, len(big))
	case <-time.After(publishTimeout + 5*time.Second):
		t.Fatal("Publish in flight when the broker went away did not return")
	}

	for seq := 1; time.Since(cutAt) < 2*time.Second; seq++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		batch := Batch(o.Destination, keys, seq)
		start := time.Now()
		errs := o.Sink.Publish(ctx, batch)
		cancel()
		if len(errs) != len(batch) {
			t.Fatalf("Publish during an outage returned %v, want one error per message", errs)
		}
		for i, err := range errs {
			if err == nil {
				t.Fatalf("message %d was accepted while the broker was unreachable", i)
			}
			if sink.Permanent(err) {
				t.Fatalf("message %d: outage error is permanent (it would be dead-lettered): %v", i, err)
			}
		}
		if seq == 1 {
			t.Logf("during the outage (%v): %v", time.Since(start).Round(time.Millisecond), errs[0])
		}
		time.Sleep(200 * time.Millisecond)
	}

	o.Restore()
	restoredAt := time.Now()
	for seq := 1000; ; seq++ {
		batch := Batch(o.Destination, keys, seq)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs := o.Sink.Publish(ctx, batch)
		cancel()
		ok := true
		for _, err := range errs {
			if err != nil {
				if sink.Permanent(err) {
					t.Fatalf("after restore: permanent error: %v", err)
				}
				ok = false
			}
		}
		if ok {
			accepted = append(accepted, batch...)
			t.Logf("recovered %v after restore", time.Since(restoredAt).Round(time.Millisecond))
			break
		}
		if time.Since(restoredAt) > 20*time.Second {
			t.Fatalf("the sink did not recover within 20s of the broker's return: %v", errs[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := Batch(o.Destination, keys, 2000)
	Publish(t, o.Sink, after)
	accepted = append(accepted, after...)

	// Messages of failed publishes may or may not have arrived; every
	// accepted one must have.
	got := consume(t, h, o.Destination, len(accepted))
	seen := make(map[string]bool, len(got))
	for _, r := range got {
		seen[r.ID] = true
	}
	for _, m := range accepted {
		if !seen[m.Event.ID.String()] {
			t.Errorf("accepted message %s did not arrive", m.Event.ID)
		}
	}
}
