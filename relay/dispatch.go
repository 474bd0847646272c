package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/relay/sink"
)

// delivery is one event on one route.
type delivery struct {
	msg   Message
	route *route
	item  *item
	first time.Time
	errs  []string // the errors of each attempt, the last few
	bo    backoff.BackOff
	next  *delivery // next delivery of the same key on the same route
	err   error     // the final error, for dead letters
}

type keyQueue struct {
	head, tail *delivery
}

// sinkState is the dispatcher's view of one sink.
type sinkState struct {
	name     string
	sink     Sink
	ready    []*delivery
	inflight int
	// work feeds the sink's publishers: batches_in_flight goroutines that
	// live as long as the dispatcher (a goroutine per batch would start
	// with a small stack and grow it through the client's call chain, for
	// every batch).
	work chan []*delivery
}

type batchResult struct {
	s    *sinkState
	ds   []*delivery
	errs []error
	dur  time.Duration
}

// dispatcher delivers items to their routes' sinks. One goroutine (run) owns
// all its state. Per route, a key has at most one delivery in flight or waiting
// for a retry; its later events wait in the key's queue, so a failing key holds
// back only itself. Ready deliveries are handed to each sink in batches, with a
// bounded number of batches in flight per sink.
type dispatcher struct {
	cfg     DeliveryConfig
	logger  *slog.Logger
	metrics *metrics
	sinks   map[string]*sinkState
	queues  map[*route]map[string]*keyQueue

	// Set by the pipeline: where items come from, and where they go once
	// handled on every route.
	in        <-chan []*item
	delivered chan<- []*item // to be marked
	replayed  chan<- *item   // replays, back to the replayer

	results chan batchResult
	retries chan *delivery
	dead    chan *delivery // dead letters written
	dlq     *deadLetterWriter
	tracing *tracing // nil when tracing is off

	wg      sync.WaitGroup // publish goroutines and retry timers
	pending int            // items in the dispatcher

	prefailed []*delivery
	finished  []*item // finished in this turn of the loop, for handOn
}

func newDispatcher(cfg DeliveryConfig, sinks map[string]Sink, logger *slog.Logger, m *metrics, dlq *deadLetterWriter) *dispatcher {
	d := &dispatcher{
		cfg: cfg, logger: logger, metrics: m, dlq: dlq,
		sinks:   map[string]*sinkState{},
		queues:  map[*route]map[string]*keyQueue{},
		results: make(chan batchResult, 64),
		retries: make(chan *delivery, 1024),
		dead:    make(chan *delivery, 1024),
	}
	for name, s := range sinks {
		d.sinks[name] = &sinkState{name: name, sink: s}
	}
	return d
}

// run processes items until ctx is done, then waits for publishes in flight
// to return (their outcome is dropped: the events will be read again from the
// slot).
func (d *dispatcher) run(ctx context.Context) {
	defer d.wg.Wait()
	for _, s := range d.sinks {
		s.work = make(chan []*delivery, d.cfg.BatchesInFlight)
		for range d.cfg.BatchesInFlight {
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				for batch := range s.work {
					d.publish(ctx, s, batch)
				}
			}()
		}
		defer close(s.work)
	}
	for {
		select {
		case items := <-d.in:
			for _, it := range items {
				d.accept(it)
			}
		case r := <-d.results:
			d.finishBatch(ctx, r)
		case dl := <-d.retries:
			d.makeReady(dl)
		case dl := <-d.dead:
			d.finish(dl)
		case <-ctx.Done():
			return
		}
		if len(d.finished) > 0 {
			d.handOn(ctx)
		}
		d.dispatch(ctx)
	}
}

// handOn sends the items finished in this turn of the loop on: replays back
// to the replayer, the others to the marker.
func (d *dispatcher) handOn(ctx context.Context) {
	items := d.finished
	d.finished = nil
	marks := items[:0] // the slice is handed over
	for _, it := range items {
		if it.replay != nil {
			select {
			case d.replayed <- it:
			case <-ctx.Done():
				return
			}
			continue
		}
		marks = append(marks, it)
	}
	if len(marks) > 0 {
		select {
		case d.delivered <- marks:
		case <-ctx.Done():
		}
	}
}

func (d *dispatcher) accept(it *item) {
	if len(it.ds) == 0 {
		// No route took the event (dropped as unrouted): it is finished,
		// and goes on to be marked like a delivered one. It enters no
		// key queue, so it neither waits for nor holds back any delivery.
		d.finished = append(d.finished, it)
		return
	}
	d.pending++
	it.remaining = len(it.ds)
	for _, dl := range it.ds {
		qs := d.queues[dl.route]
		if qs == nil {
			qs = map[string]*keyQueue{}
			d.queues[dl.route] = qs
		}
		key := it.key
		q := qs[key]
		if q == nil {
			q = &keyQueue{head: dl, tail: dl}
			qs[key] = q
			d.makeReady(dl)
			continue
		}
		q.tail.next = dl
		q.tail = dl
	}
}

func (d *dispatcher) makeReady(dl *delivery) {
	if dl.err != nil {
		// Failed before any attempt (its destination did not render); a
		// delivery that fails later is dead-lettered and never ready again.
		dl.first = time.Now()
		d.prefailed = append(d.prefailed, dl)
		return
	}
	s := d.sinks[dl.route.Sink]
	s.ready = append(s.ready, dl)
}

// dispatch hands ready deliveries to sinks that have a free batch slot.
func (d *dispatcher) dispatch(ctx context.Context) {
	for len(d.prefailed) > 0 {
		dl := d.prefailed[0]
		d.prefailed = d.prefailed[1:]
		d.fail(ctx, dl, dl.err, dl.first)
	}
	for _, s := range d.sinks {
		for len(s.ready) > 0 && s.inflight < d.cfg.BatchesInFlight {
			n := min(len(s.ready), d.cfg.BatchSize)
			batch := make([]*delivery, n)
			copy(batch, s.ready[:n])
			rest := copy(s.ready, s.ready[n:])
			clear(s.ready[rest:])
			s.ready = s.ready[:rest]
			s.inflight++
			s.work <- batch // never blocks: at most batches_in_flight are out
		}
	}
}

func (d *dispatcher) publish(ctx context.Context, s *sinkState, batch []*delivery) {
	msgs := make([]*Message, len(batch))
	now := time.Now()
	var spans []trace.Span
	if d.tracing != nil {
		spans = make([]trace.Span, len(batch))
	}
	for i, dl := range batch {
		if dl.first.IsZero() {
			dl.first = now
		}
		msgs[i] = &dl.msg
		if spans != nil {
			spans[i] = d.tracing.start(&dl.msg, s.name)
		}
	}
	start := time.Now()
	errs := s.sink.Publish(ctx, msgs)
	if errs != nil && len(errs) != len(msgs) {
		errs = sink.AllFailed(len(msgs), errSinkContract)
	}
	for i, span := range spans {
		var err error
		if errs != nil {
			err = errs[i]
		}
		endSpan(span, err)
	}
	select {
	case d.results <- batchResult{s: s, ds: batch, errs: errs, dur: time.Since(start)}:
	case <-ctx.Done():
	}
}

var errSinkContract = sink.Permanentf("sink returned a result slice of the wrong length")

func (d *dispatcher) finishBatch(ctx context.Context, r batchResult) {
	r.s.inflight--
	now := time.Now()
	for i, dl := range r.ds {
		var err error
		if r.errs != nil {
			err = r.errs[i]
		}
		d.metrics.observeDelivery(dl, r.dur, now, err)
		if err == nil {
			d.finish(dl)
			continue
		}
		d.fail(ctx, dl, err, now)
	}
}

func (d *dispatcher) fail(ctx context.Context, dl *delivery, err error, now time.Time) {
	msg := err.Error()
	if len(dl.errs) >= 10 {
		copy(dl.errs, dl.errs[1:])
		dl.errs = dl.errs[:9]
	}
	dl.errs = append(dl.errs, now.UTC().Format(time.RFC3339Nano)+" "+msg)
	rc := dl.route.Retry
	exhausted := dl.msg.Attempt >= rc.MaxAttempts || (rc.MaxElapsed > 0 && now.Sub(dl.first) >= rc.MaxElapsed.D())
	if sink.Permanent(err) || exhausted {
		dl.err = err
		d.logger.Warn("event dead-lettered", "event_id", dl.msg.Event.ID.String(), "route", dl.route.Name,
			"sink", dl.route.Sink, "destination", dl.msg.Destination, "attempts", dl.msg.Attempt,
			"permanent", sink.Permanent(err), "error", msg)
		d.metrics.deadLettered(dl)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if d.dlq.write(ctx, dl) == nil {
				select {
				case d.dead <- dl:
				case <-ctx.Done():
				}
			}
		}()
		return
	}
	if dl.bo == nil {
		b := backoff.NewExponentialBackOff()
		b.InitialInterval = rc.InitialInterval.D()
		b.MaxInterval = rc.MaxInterval.D()
		b.MaxElapsedTime = 0
		b.RandomizationFactor = 0.5
		b.Reset()
		dl.bo = b
	}
	wait := dl.bo.NextBackOff()
	dl.msg.Attempt++
	d.metrics.retried(dl)
	d.logger.Debug("delivery failed, retrying", "event_id", dl.msg.Event.ID.String(), "route", dl.route.Name,
		"attempt", dl.msg.Attempt, "in", wait, "error", msg)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
			select {
			case d.retries <- dl:
			case <-ctx.Done():
			}
		case <-ctx.Done():
		}
	}()
}

// finish completes a delivery (delivered or dead-lettered) and starts the next
// one of its key.
func (d *dispatcher) finish(dl *delivery) {
	qs := d.queues[dl.route]
	key := dl.item.key
	q := qs[key]
	if next := dl.next; next != nil {
		q.head = next
		dl.next = nil
		d.makeReady(next)
	} else {
		delete(qs, key)
	}
	it := dl.item
	it.remaining--
	if it.remaining == 0 {
		d.pending--
		d.finished = append(d.finished, it)
	}
}
