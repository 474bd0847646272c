package bench

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/sdk"
)

// load writes outbox events through the SDK, each in its own transaction or
// in batches, from several connections at once.
type load struct {
	pool        *pgxpool.Pool
	w           *sdk.Writer
	payloadSize int
	keys        int
	pad         string
	span        trace.SpanContext // when valid, events carry its traceparent

	seq       atomic.Int64 // next sequence number
	committed atomic.Int64 // events committed since the start
}

const seqPrefix = `{"seq":"`

func newLoad(pool *pgxpool.Pool, w *sdk.Writer, payloadSize, keys int, traced bool) *load {
	padLen := max(payloadSize-len(seqPrefix)-12-len(`","pad":""}`), 0)
	l := &load{pool: pool, w: w, payloadSize: payloadSize, keys: max(keys, 1), pad: strings.Repeat("x", padLen)}
	if traced {
		l.span = trace.NewSpanContext(trace.SpanContextConfig{
			TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
			SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
			TraceFlags: trace.FlagsSampled,
		})
	}
	return l
}

// ctx carries the load's span, as an instrumented service's request would:
// the SDK writes its traceparent into the event's headers.
func (l *load) ctx(ctx context.Context) context.Context {
	if !l.span.IsValid() {
		return ctx
	}
	return trace.ContextWithSpanContext(ctx, l.span)
}

// payload is a JSON object of payloadSize bytes that starts with the event's
// sequence number, so a consumer can tell which event arrived.
func (l *load) payload(seq int64) []byte {
	b := make([]byte, 0, l.payloadSize)
	b = append(b, seqPrefix...)
	s := strconv.FormatInt(seq, 10)
	for range 12 - len(s) {
		b = append(b, '0')
	}
	b = append(b, s...)
	b = append(b, `","pad":"`...)
	b = append(b, l.pad...)
	return append(b, `"}`...)
}

// parseSeq reads the sequence number a payload starts with.
func parseSeq(p []byte) (int64, bool) {
	if len(p) < len(seqPrefix)+12 || string(p[:len(seqPrefix)]) != seqPrefix {
		return 0, false
	}
	var n int64
	for _, c := range p[len(seqPrefix) : len(seqPrefix)+12] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func (l *load) event(seq int64) sdk.Event {
	return sdk.Event{
		AggregateType: "order",
		AggregateID:   strconv.FormatInt(seq%int64(l.keys), 10),
		EventType:     "order.created",
		Payload:       l.payload(seq),
	}
}

// writeTx commits one transaction with batch events (Write for 1, WriteBatch
// otherwise) and returns the sequence number of its first event.
func (l *load) writeTx(ctx context.Context, batch int, evs []sdk.Event) (int64, error) {
	first := l.seq.Add(int64(batch)) - int64(batch)
	ctx = l.ctx(ctx)
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if batch == 1 {
			e := l.event(first)
			return l.w.Write(ctx, tx, &e)
		}
		evs = evs[:0]
		for i := range int64(batch) {
			evs = append(evs, l.event(first+i))
		}
		return l.w.WriteBatch(ctx, tx, evs)
	})
	if err != nil {
		return 0, err
	}
	l.committed.Add(int64(batch))
	return first, nil
}

// closed runs writers unthrottled, each committing transactions of batch
// events, until ctx is done or dur has passed. It returns the events
// committed and the time taken.
func (l *load) closed(ctx context.Context, writers, batch int, dur time.Duration) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	start := l.committed.Load()
	t0 := time.Now()
	err := l.each(ctx, writers, func(ctx context.Context, evs []sdk.Event) error {
		_, err := l.writeTx(ctx, batch, evs)
		return err
	})
	return l.committed.Load() - start, time.Since(t0), err
}

// fill writes n events in transactions of batch events.
func (l *load) fill(ctx context.Context, writers, batch int, n int64) error {
	var left atomic.Int64
	left.Store(n)
	return l.each(ctx, writers, func(ctx context.Context, evs []sdk.Event) error {
		k := left.Add(-int64(batch))
		if k <= -int64(batch) {
			return errDone
		}
		_, err := l.writeTx(ctx, int(min(int64(batch), k+int64(batch))), evs)
		return err
	})
}

// paced writes n events, one per transaction, at rate events/s (open loop:
// event i is due at start + i/rate whatever happened to earlier ones) and
// records each commit in log.
func (l *load) paced(ctx context.Context, writers int, rate float64, n int, log *commitLog) error {
	var next atomic.Int64
	start := time.Now()
	return l.each(ctx, writers, func(ctx context.Context, _ []sdk.Event) error {
		i := next.Add(1) - 1
		if i >= int64(n) {
			return errDone
		}
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		seq := log.base + i
		err := pgx.BeginFunc(l.ctx(ctx), l.pool, func(tx pgx.Tx) error {
			e := l.event(seq)
			return l.w.Write(ctx, tx, &e)
		})
		if err != nil {
			return err
		}
		log.commit(seq, time.Now())
		l.committed.Add(1)
		return nil
	})
}

var errDone = errors.New("done")

// each runs op in a loop on writers goroutines until it returns errDone, an
// error, or ctx is done. Deadline expiry is not an error.
func (l *load) each(ctx context.Context, writers int, op func(context.Context, []sdk.Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs := make([]sdk.Event, 0, 128)
			for ctx.Err() == nil {
				err := op(ctx, evs)
				if errors.Is(err, errDone) {
					return
				}
				if err != nil && ctx.Err() == nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
