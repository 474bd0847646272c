package handler_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/handler"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newSink(t *testing.T, cfg *handler.Config) *handler.Sink {
	t.Helper()
	if cfg == nil {
		cfg = &handler.Config{}
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	s, err := handler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func msg(eventType, key string) *sink.Message {
	return &sink.Message{
		Event:   &sink.Event{ID: uuid.Must(uuid.NewV7()), AggregateType: "order", AggregateID: key, EventType: eventType, Payload: []byte(`{}`)},
		Route:   "app",
		Attempt: 1,
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestDispatchByPattern(t *testing.T) {
	t.Parallel()
	s := newSink(t, nil)
	var mu sync.Mutex
	got := map[string]string{} // event type -> pattern that handled it
	reg := func(p string) {
		must(t, s.Handle(p, func(_ context.Context, m *sink.Message) error {
			mu.Lock()
			got[m.Event.EventType] = p
			mu.Unlock()
			return nil
		}))
	}
	for _, p := range []string{"*", "order.*", "order.placed", "order.pa*", "order.p?id", "invoice.[ab]*"} {
		reg(p)
	}
	want := map[string]string{
		"order.placed":   "order.placed", // exact beats every glob
		"order.paid":     "order.pa*",    // longest literal prefix
		"order.shipped":  "order.*",
		"customer.added": "*",
		"invoice.a1":     "invoice.[ab]*",
	}
	var msgs []*sink.Message
	for et := range want {
		msgs = append(msgs, msg(et, et))
	}
	if errs := s.Publish(context.Background(), msgs); errs != nil {
		t.Fatalf("Publish: %v", errs)
	}
	for et, p := range want {
		if got[et] != p {
			t.Errorf("%s handled by %q, want %q", et, got[et], p)
		}
	}
}

func TestRegistrationErrors(t *testing.T) {
	t.Parallel()
	s := newSink(t, nil)
	ok := func(context.Context, *sink.Message) error { return nil }
	must(t, s.Handle("order.*", ok))
	for name, err := range map[string]error{
		"duplicate":      s.Handle("order.*", ok),
		"duplicate kind": s.HandleAsync("order.*", func(context.Context, *sink.Message, func(error)) {}),
		"bad glob":       s.Handle("order.[", ok),
		"empty":          s.Handle("", ok),
		"nil":            s.Handle("x", nil),
		"nil async":      s.HandleAsync("y", nil),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := handler.New(&handler.Config{Concurrency: -1}); err == nil || !strings.Contains(err.Error(), "Concurrency") {
		t.Errorf("Concurrency -1: %v, want an error naming the field", err)
	}
	if _, err := handler.New(&handler.Config{Timeout: -time.Second}); err == nil || !strings.Contains(err.Error(), "Timeout") {
		t.Errorf("Timeout -1s: %v, want an error naming the field", err)
	}
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	s := newSink(t, nil)
	boom := errors.New("boom")
	must(t, s.Handle("ok", func(context.Context, *sink.Message) error { return nil }))
	must(t, s.Handle("fail", func(context.Context, *sink.Message) error { return boom }))
	must(t, s.Handle("permanent", func(context.Context, *sink.Message) error { return sink.MarkPermanent(boom) }))
	must(t, s.Handle("panic", func(context.Context, *sink.Message) error { panic("kaboom") }))
	must(t, s.HandleAsync("async.panic", func(context.Context, *sink.Message, func(error)) { panic(boom) }))
	must(t, s.Handle("order.placed", func(context.Context, *sink.Message) error { return nil }))

	msgs := []*sink.Message{msg("ok", "1"), msg("fail", "2"), msg("permanent", "3"), msg("panic", "4"), msg("order.plcaed", "5"), msg("async.panic", "6")}
	errs := s.Publish(context.Background(), msgs)
	if len(errs) != len(msgs) {
		t.Fatalf("Publish returned %d results for %d messages: %v", len(errs), len(msgs), errs)
	}
	if errs[0] != nil {
		t.Errorf("ok: %v", errs[0])
	}
	if !errors.Is(errs[1], boom) || sink.Permanent(errs[1]) {
		t.Errorf("fail: %v (permanent %v), want boom, retryable", errs[1], sink.Permanent(errs[1]))
	}
	if !errors.Is(errs[2], boom) || !sink.Permanent(errs[2]) {
		t.Errorf("permanent: %v, want boom, permanent", errs[2])
	}
	var pe *handler.PanicError
	if !errors.As(errs[3], &pe) || pe.Value != "kaboom" || len(pe.Stack) == 0 || sink.Permanent(errs[3]) {
		t.Errorf("panic: %v, want a retryable *PanicError with the stack", errs[3])
	}
	if !errors.Is(errs[4], handler.ErrNoHandler) || !sink.Permanent(errs[4]) {
		t.Errorf("no handler: %v, want a permanent ErrNoHandler", errs[4])
	}
	if !strings.Contains(errs[4].Error(), `did you mean "order.placed"`) {
		t.Errorf("no handler: %q does not suggest the near miss", errs[4])
	}
	if !errors.As(errs[5], &pe) || !errors.Is(errs[5], boom) {
		t.Errorf("async panic: %v, want a *PanicError wrapping boom", errs[5])
	}
}

func TestNeverConcurrentByDefault(t *testing.T) {
	t.Parallel()
	for _, conc := range []int{1, 4} {
		t.Run(fmt.Sprint(conc), func(t *testing.T) {
			t.Parallel()
			s := newSink(t, &handler.Config{Concurrency: conc})
			var running, peak atomic.Int32
			must(t, s.Handle("*", func(context.Context, *sink.Message) error {
				n := running.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				time.Sleep(2 * time.Millisecond)
				running.Add(-1)
				return nil
			}))
			// Several Publish calls at once, as the relay makes with batches_in_flight.
			var wg sync.WaitGroup
			for b := range 4 {
				wg.Go(func() {
					var msgs []*sink.Message
					for i := range 10 {
						msgs = append(msgs, msg("x", fmt.Sprintf("%d-%d", b, i)))
					}
					if errs := s.Publish(context.Background(), msgs); errs != nil {
						t.Errorf("Publish: %v", errs)
					}
				})
			}
			wg.Wait()
			if int(peak.Load()) != conc {
				t.Errorf("at most %d handler calls ran at once, want exactly Concurrency=%d", peak.Load(), conc)
			}
		})
	}
}

func TestAsync(t *testing.T) {
	t.Parallel()
	s := newSink(t, &handler.Config{Timeout: 300 * time.Millisecond})
	boom := errors.New("boom")
	var late sync.WaitGroup
	t.Cleanup(late.Wait)
	must(t, s.HandleAsync("later", func(ctx context.Context, m *sink.Message, done func(error)) {
		go func() {
			select {
			case <-time.After(20 * time.Millisecond):
				done(nil)
			case <-ctx.Done():
				done(ctx.Err())
			}
		}()
	}))
	must(t, s.HandleAsync("now", func(_ context.Context, _ *sink.Message, done func(error)) { done(boom); done(nil) }))
	must(t, s.HandleAsync("never", func(_ context.Context, _ *sink.Message, done func(error)) {
		late.Go(func() { time.Sleep(500 * time.Millisecond); done(nil) }) // after the timeout: ignored
	}))
	must(t, s.HandleAsync("permanent", func(_ context.Context, _ *sink.Message, done func(error)) {
		go done(sink.MarkPermanent(boom))
	}))

	start := time.Now()
	errs := s.Publish(context.Background(), []*sink.Message{msg("later", "1"), msg("now", "2"), msg("never", "3"), msg("permanent", "4")})
	if len(errs) != 4 {
		t.Fatalf("Publish: %v", errs)
	}
	if errs[0] != nil {
		t.Errorf("later: %v", errs[0])
	}
	if !errors.Is(errs[1], boom) {
		t.Errorf("now: %v, want the first outcome (boom)", errs[1])
	}
	if !errors.Is(errs[2], handler.ErrTimeout) || sink.Permanent(errs[2]) {
		t.Errorf("never: %v, want a retryable ErrTimeout", errs[2])
	}
	if !sink.Permanent(errs[3]) {
		t.Errorf("permanent: %v, want permanent", errs[3])
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("Publish took %s, want about the 300ms timeout", d)
	}
}

func TestContextEndsPublish(t *testing.T) {
	t.Parallel()
	s := newSink(t, nil)
	started := make(chan struct{})
	must(t, s.Handle("slow", func(ctx context.Context, _ *sink.Message) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}))
	must(t, s.HandleAsync("async", func(context.Context, *sink.Message, func(error)) {}))
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	errs := s.Publish(ctx, []*sink.Message{msg("slow", "1"), msg("async", "2")})
	for i, err := range errs {
		if !errors.Is(err, context.Canceled) || sink.Permanent(err) {
			t.Errorf("message %d: %v, want a retryable context.Canceled", i, err)
		}
	}
	if len(errs) != 2 {
		t.Fatalf("Publish: %v", errs)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	s := newSink(t, nil)
	must(t, s.Handle("*", func(context.Context, *sink.Message) error { return nil }))
	must(t, s.Close())
	errs := s.Publish(context.Background(), []*sink.Message{msg("x", "1")})
	if len(errs) != 1 || !errors.Is(errs[0], handler.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", errs)
	}
}
