package relay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/pgident"
)

// Replays of dead letters. An operator asks for one with `outbox dlq replay`,
// which sets replay_status = 'requested'. The active relay claims requested
// rows (replay_status = 'delivering'), sends each event, with its own id, to
// the route named in the row only, through the same per-key queues, retries
// and dead-letter path as live events, and records the outcome: 'replayed'
// (replayed_at, replay_count + 1), or 'failed' when the replay was
// dead-lettered again (its attempts and errors are added to the row).

// replayState marks an item as a replay of one dead letter.
type replayState struct {
	deadLetterID int64
}

type replayer struct {
	pool      *pgxpool.Pool
	table     string
	router    *Router
	source    string
	logger    *slog.Logger
	poll      time.Duration
	finished  chan *item
	submit    func(context.Context, *item) error
	batchSize int
}

func newReplayer(pool *pgxpool.Pool, schema string, router *Router, source string, logger *slog.Logger, submit func(context.Context, *item) error) *replayer {
	return &replayer{
		pool: pool, table: pgident.Quote(schema) + ".dead_letters", router: router, source: source,
		logger: logger, poll: 500 * time.Millisecond, finished: make(chan *item, 100), submit: submit, batchSize: 100,
	}
}

// run claims requested replays and records their outcomes until ctx is done.
// Only the active relay runs it, so rows left 'delivering' by a relay that
// died are requested again first.
func (p *replayer) run(ctx context.Context) error {
	bo := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(5*time.Second)), ctx)
	err := backoff.Retry(func() error {
		_, err := p.pool.Exec(ctx, `UPDATE `+p.table+` SET replay_status = 'requested' WHERE replay_status = 'delivering'`)
		if err != nil && ctx.Err() == nil {
			p.logger.Warn("requeueing the replays a previous relay left in delivery failed; retrying", "error", err)
		}
		return err
	}, bo)
	if err != nil {
		return nil // ctx is done
	}
	inflight := 0
	t := time.NewTicker(p.poll)
	defer t.Stop()
	for {
		if inflight == 0 {
			n, err := p.claim(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				p.logger.Warn("claiming dead-letter replays failed; retrying", "error", err)
			}
			inflight += n
		}
		select {
		case it := <-p.finished:
			inflight--
			p.record(ctx, it)
		case <-t.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// claim marks up to batchSize requested dead letters as delivering and
// submits them in their events' order (event_seq, the events' seq): a key's
// events in commit order, as the stream and the snapshot deliver them; the
// dispatcher keeps per-key order from there, behind any delivery of the key
// still in flight. The dead letters' ids are not that order: they follow the
// order events failed in, and an event delivered before a crash, then sent
// again and dead-lettered, fails after later events of its key. Dead letters
// without event_seq (their event was gone when migration 3 ran) are older
// than the others and go first, by id. UPDATE ... RETURNING returns rows in
// no particular order, hence the ORDER BY on the outer SELECT.
func (p *replayer) claim(ctx context.Context) (int, error) {
	const cols = `id, route, event_id, aggregate_type, aggregate_id, event_type, schema_version, payload, content_type,
		    headers, tenant_id, occurred_at, created_at`
	rows, err := p.pool.Query(ctx, `WITH claimed AS (
		  UPDATE `+p.table+` SET replay_status = 'delivering'
		  WHERE id IN (SELECT id FROM `+p.table+` WHERE replay_status = 'requested' ORDER BY event_seq NULLS FIRST, id LIMIT $1 FOR UPDATE SKIP LOCKED)
		  RETURNING `+cols+`, event_seq)
		SELECT `+cols+` FROM claimed ORDER BY event_seq NULLS FIRST, id`, pgx.QueryResultFormats{pgx.BinaryFormatCode}, p.batchSize)
	if err != nil {
		return 0, err
	}
	type claimed struct {
		id    int64
		ev    *Event
		route string
	}
	var cs []claimed
	for rows.Next() {
		c := claimed{ev: &Event{}}
		// The event's columns decode as a row of the events table does,
		// so a replay carries the values the stream would.
		row := rawRowFromResult(rows, 2)
		err := rows.Scan(&c.id, &c.route, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil)
		if err == nil {
			err = row.decode(c.ev)
		}
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("replay: read claimed dead letter: %w", err)
		}
		cs = append(cs, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cs {
		var rt *Route
		for _, r := range p.router.Routes() {
			if r.Name == c.route {
				rt = r
			}
		}
		msg := ""
		switch {
		case rt == nil:
			msg = fmt.Sprintf("route %q is not in the relay's config any more: add it back, or purge the dead letter", c.route)
		case c.ev.decodeErr != nil:
			msg = fmt.Sprintf("the dead letter's copy of the event cannot be decoded: %v", c.ev.decodeErr)
		}
		if msg != "" {
			p.logger.Warn("dead-letter replay failed", "dead_letter_id", c.id, "event_id", c.ev.ID.String(), "error", msg)
			p.markFailed(ctx, c.id, msg)
			continue
		}
		it := newItem(c.ev, nil, 1)
		it.replay = &replayState{deadLetterID: c.id}
		dl := &delivery{route: rt, item: it, msg: Message{Event: c.ev, Route: rt.Name, Source: p.source, Headers: c.ev.Headers, Attempt: 1}}
		if dest, err := rt.Destination.Render(c.ev); err != nil {
			dl.msg.Destination, dl.err = rt.Destination.String(), err
		} else {
			dl.msg.Destination = dest
		}
		it.ds = append(it.ds, dl)
		p.logger.Info("replaying dead letter", "dead_letter_id", c.id, "event_id", c.ev.ID.String(), "route", rt.Name, "destination", dl.msg.Destination)
		if err := p.submit(ctx, it); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// record stores the outcome of a finished replay. A replay that was
// dead-lettered again was already recorded by the dead-letter writer.
func (p *replayer) record(ctx context.Context, it *item) {
	dl := it.ds[0]
	if dl.err != nil {
		p.logger.Warn("dead-letter replay failed again", "dead_letter_id", it.replay.deadLetterID, "event_id", it.ev.ID.String(), "error", dl.err.Error())
		return
	}
	bo := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(5*time.Second)), ctx)
	err := backoff.Retry(func() error {
		_, err := p.pool.Exec(ctx, `UPDATE `+p.table+` SET replay_status = 'replayed', replayed_at = now(), replay_count = replay_count + 1 WHERE id = $1`, it.replay.deadLetterID)
		return err
	}, bo)
	if err == nil {
		p.logger.Info("dead letter replayed", "dead_letter_id", it.replay.deadLetterID, "event_id", it.ev.ID.String(), "route", dl.route.Name)
	}
}

func (p *replayer) markFailed(ctx context.Context, id int64, msg string) {
	_, err := p.pool.Exec(ctx, `UPDATE `+p.table+` SET replay_status = 'failed', last_error = $2, last_failed_at = now(),
		errors = errors || jsonb_build_array($3::text) WHERE id = $1`, id, msg, time.Now().UTC().Format(time.RFC3339Nano)+" "+msg)
	if err != nil && ctx.Err() == nil {
		p.logger.Error("recording a failed replay failed", "dead_letter_id", id, "error", err)
	}
}
