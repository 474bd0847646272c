package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/outboxrelay/outbox/internal/pgoutput"
	"github.com/outboxrelay/outbox/relay/sink"
)

// pipeline is what happens to an event between the moment it is read (from
// the replication stream, a new slot's snapshot, or a dead letter to replay)
// and the moment the slot's position may move past it. Its stages run one
// goroutine each; the channels between them are created and connected in
// newPipeline, and nothing comes back through a callback:
//
//	stream, snapshot ─submit─▶ in ─▶ dispatcher ─delivered─▶ marker ─marked─▶ complete
//	replayer ─────────claimed─▶ in       └──────replayed─▶ replayer
//
// In order:
//
//  1. submit (on the stream's goroutine): route the event, take room for it
//     in the gate (waiting for room pauses reading), and hand it to the
//     dispatcher, in batches.
//  2. dispatcher (dispatch.go): deliver it on every route, one delivery per
//     key and route in flight, with retries; dead-letter what fails for good.
//  3. marker (mark.go): mark its row delivered, or delete it.
//  4. complete: finish it in its transaction, so that the position
//     (position.go) may move past it once every earlier event is finished
//     too, then release its room in the gate.
//
// A replay of a dead letter takes the same way through the dispatcher, then
// goes back to the replayer (replay.go), which records the outcome; its row
// is not the events table's, so it is neither marked nor counted in a
// transaction or the gate.
type pipeline struct {
	cfg     DeliveryConfig
	source  string
	logger  *slog.Logger
	metrics *metrics
	router  *router
	pos     *position
	gate    *gate // bounds the events in the pipeline (max_pending, max_pending_bytes)

	in        chan []*item // to the dispatcher: routed events and claimed replays
	delivered chan []*item // dispatcher to marker: events handled on every route
	replayed  chan *item   // dispatcher to replayer: replays handled
	marked    chan []*item // marker to complete: events whose rows are marked

	disp   *dispatcher
	mark   *marker
	replay *replayer

	// Owned by the goroutine that submits (the stream).
	handoff []*item  // routed events not yet handed to the dispatcher
	routes  []*route // scratch for router.match
}

// handoffBatch is the most events submit hands the dispatcher at once.
const handoffBatch = 256

// newPipeline builds the pipeline of a session whose slot starts at pos.
func (s *session) newPipeline(pos *position) *pipeline {
	cfg, schema := s.cfg.Delivery, s.cfg.Database.Schema
	p := &pipeline{
		cfg: cfg, source: s.cfg.Source, logger: s.logger, metrics: s.r.metrics, router: s.r.router, pos: pos,
		gate:      newGate(cfg.MaxPending, cfg.MaxPendingBytes),
		in:        make(chan []*item, 64),
		delivered: make(chan []*item, 64),
		replayed:  make(chan *item, 100),
		marked:    make(chan []*item, 64),
		disp:      newDispatcher(cfg, s.r.sinks, s.logger, s.r.metrics, newDeadLetterWriter(s.pool, schema, s.logger)),
		mark:      newMarker(s.pool, schema, cfg, s.logger),
		replay:    newReplayer(s.pool, schema, s.r.router, s.cfg.Source, s.logger),
	}
	p.disp.tracing = s.r.tracing
	p.disp.in, p.disp.delivered, p.disp.replayed = p.in, p.delivered, p.replayed
	p.mark.in, p.mark.marked = p.delivered, p.marked
	p.replay.claimed, p.replay.finished = p.in, p.replayed
	return p
}

// run runs the stages until ctx is done. The dispatcher then waits for the
// publishes in flight; what is unfinished is read again by the next session.
func (p *pipeline) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); p.disp.run(ctx) }()
	go func() { defer wg.Done(); p.mark.run(ctx) }()
	go func() {
		defer wg.Done()
		if err := p.replay.run(ctx); err != nil {
			p.logger.Error("dead-letter replays stopped", "error", err)
		}
	}()
	p.complete(ctx)
	wg.Wait()
}

// complete is the last stage. An event whose row is marked is finished in its
// transaction, so the position may move past it once every earlier event is
// finished too; only then is its room in the gate released, because a
// stopping stream waits for the gate to empty before it confirms its last
// position.
func (p *pipeline) complete(ctx context.Context) {
	for {
		select {
		case items := <-p.marked:
			var bytes int64
			for _, it := range items {
				it.txn.done()
				bytes += it.weight
			}
			p.gate.release(len(items), bytes)
			p.metrics.setInflight(p.gate.held())
		case <-ctx.Done():
			return
		}
	}
}

// item is one event on its way through the pipeline: it is finished when every
// route has delivered or dead-lettered it (at once when no route took it) and
// its row has been marked.
type item struct {
	ev        *Event
	key       string // ev.Key(), computed once
	txn       *txn
	remaining int // routes not yet finished; owned by the dispatcher loop
	ds        []*delivery
	replay    *replayState // set for a replay of a dead letter; txn is nil then
	weight    int64        // bytes counted against delivery.max_pending_bytes
}

// newItem makes an item of a row read from the outbox, counted in its
// transaction t (nil for a replay). The event keeps the row's decode error
// (it is dead-lettered, with that reason, on every route that takes it) and
// its headers' JSON as read (a dead letter copies it exactly: Headers keeps
// non-string values as their JSON text, and a row whose headers cannot be
// decoded has none).
func newItem(row *pgoutput.Row, t *txn) *item {
	ev := &Event{
		ID: row.ID, AggregateType: row.AggregateType, AggregateID: row.AggregateID, EventType: row.EventType,
		SchemaVersion: row.SchemaVersion, Payload: row.Payload, ContentType: row.ContentType, Headers: row.Headers,
		TenantID: row.TenantID, OccurredAt: row.OccurredAt, CreatedAt: row.CreatedAt,
		OccurredAtInf: row.OccurredAtInf, CreatedAtInf: row.CreatedAtInf, CommitTime: row.CommitTime, CommitLSN: sink.LSN(row.CommitLSN),
		DecodeErr: row.Err, RawHeaders: row.RawHeaders,
	}
	if t != nil {
		t.add(1)
	}
	return &item{ev: ev, key: ev.Key(), txn: t}
}

// addDelivery adds a delivery of the item's event on rt. One whose
// destination does not render, or whose row cannot be decoded, has failed
// before any attempt: the dispatcher dead-letters it.
func (it *item) addDelivery(rt *route, source string) *delivery {
	ev := it.ev
	dl := &delivery{route: rt, item: it, msg: Message{Event: ev, Route: rt.Name, Source: source, Headers: ev.Headers, Attempt: 1}}
	if dest, err := rt.Destination.Render(ev); err != nil {
		dl.msg.Destination, dl.err = rt.Destination.String(), err
	} else {
		dl.msg.Destination = dest
	}
	if ev.DecodeErr != nil {
		dl.err = sink.MarkPermanent(ev.DecodeErr) // retrying cannot decode the row
	}
	it.ds = append(it.ds, dl)
	return dl
}

// submit routes it and hands it to the dispatcher, waiting for room when
// the gate is full. While it waits it calls keepalive (when set) every
// status interval, so PostgreSQL does not time the stream out.
func (p *pipeline) submit(ctx context.Context, it *item, keepalive func() error) error {
	p.metrics.eventRead()
	p.route(it)
	it.weight = min(int64(len(it.ev.Payload))+256, p.cfg.MaxPendingBytes)
	if p.gate.full(it.weight) {
		// The events waiting to be handed over hold room too: hand them
		// over before waiting for room.
		if err := p.handOff(ctx, keepalive); err != nil {
			return err
		}
		if err := p.gate.wait(ctx, it.weight, p.cfg.StatusInterval.D(), keepalive); err != nil {
			return err
		}
	}
	p.gate.take(it.weight)
	p.handoff = append(p.handoff, it)
	if len(p.handoff) >= handoffBatch {
		return p.handOff(ctx, keepalive)
	}
	return nil
}

// route adds a delivery for each route of the item's event. An event no route
// takes gets none: the dispatcher finishes it at once, and it is marked like
// a delivered one, holding the position until it is.
func (p *pipeline) route(it *item) {
	ev := it.ev
	p.routes = p.router.match(p.routes[:0], ev)
	if len(p.routes) == 0 {
		p.metrics.eventDropped()
		p.logger.Debug("event matched no route; dropped, its row is marked as handled",
			"event_id", ev.ID.String(), "event_type", ev.EventType, "aggregate_type", ev.AggregateType)
	}
	if ev.DecodeErr != nil {
		p.logger.Warn("a value of the row cannot be decoded; dead-lettering it on every route that takes it",
			"event_id", ev.ID.String(), "event_type", ev.EventType, "error", ev.DecodeErr)
	}
	it.ds = make([]*delivery, 0, len(p.routes))
	for _, rt := range p.routes {
		it.addDelivery(rt, p.source)
	}
}

// pendingHandoff reports whether routed events wait to be handed over.
func (p *pipeline) pendingHandoff() bool { return len(p.handoff) > 0 }

// handOff hands the routed events to the dispatcher in one channel send. The
// stream calls it before a read that may wait for the server (nothing more is
// buffered), every handoffBatch events, and before it waits for room.
func (p *pipeline) handOff(ctx context.Context, keepalive func() error) error {
	if len(p.handoff) == 0 {
		return nil
	}
	p.metrics.setInflight(p.gate.held())
	batch := p.handoff
	p.handoff = make([]*item, 0, min(2*len(batch), handoffBatch))
	return sendKeepingAlive(ctx, p.in, batch, p.cfg.StatusInterval.D(), keepalive)
}

// handOffForDrain hands the routed events over on shutdown, when the
// stream's context is done but the pipeline still runs; if the dispatcher
// does not take them within timeout they stay unfinished (and are read again
// on the next start).
func (p *pipeline) handOffForDrain(timeout time.Duration) {
	if len(p.handoff) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	n := len(p.handoff)
	if err := p.handOff(ctx, nil); err != nil {
		p.logger.Warn("stopping: events not handed to the dispatcher; they are delivered again on the next start", "events", n)
	}
}

// sendKeepingAlive sends v on ch. While the send blocks it calls keepalive
// (when set) every interval, so PostgreSQL does not time the stream out while
// the relay waits for room.
func sendKeepingAlive[T any](ctx context.Context, ch chan<- T, v T, interval time.Duration, keepalive func() error) error {
	select {
	case ch <- v:
		return nil
	default:
	}
	var tick <-chan time.Time
	if keepalive != nil {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case ch <- v:
			return nil
		case <-tick:
			if err := keepalive(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
