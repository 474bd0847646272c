package relay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/pgoutput"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// Replays of dead letters. An operator asks for one with `outbox dlq replay`,
// which sets the dead letter's replay_status to requested. The active relay
// claims requested rows (delivering), sends each event, with its own id, to
// the route named in the row only, through the same per-key queues, retries
// and dead-letter path as live events, and records the outcome: replayed
// (replayed_at, replay_count + 1), or failed when the replay was
// dead-lettered again (its attempts and errors are added to the row).

// The replay statuses (sdk/outboxschema) as SQL literals. Literals, not
// parameters: a generic plan could not use the partial index on requested
// and delivering rows.
const (
	sqlRequested  = "'" + outboxschema.ReplayRequested + "'"
	sqlDelivering = "'" + outboxschema.ReplayDelivering + "'"
	sqlReplayed   = "'" + outboxschema.ReplayReplayed + "'"
	sqlFailed     = "'" + outboxschema.ReplayFailed + "'"
)

// replayState marks an item as a replay of one dead letter.
type replayState struct {
	deadLetterID int64
}

type replayer struct {
	pool      *pgxpool.Pool
	table     string
	router    *router
	source    string
	logger    *slog.Logger
	poll      time.Duration
	batchSize int

	// Set by the pipeline.
	claimed  chan<- []*item // to the dispatcher
	finished <-chan *item   // replays handled, back from the dispatcher
}

func newReplayer(pool *pgxpool.Pool, schema string, router *router, source string, logger *slog.Logger) *replayer {
	return &replayer{
		pool: pool, table: outboxschema.Quote(schema) + ".dead_letters", router: router, source: source,
		logger: logger, poll: 500 * time.Millisecond, batchSize: 100,
	}
}

// run claims requested replays and records their outcomes until ctx is done.
// Only the active relay runs it, so rows left delivering by a relay that
// died are requested again first.
func (p *replayer) run(ctx context.Context) error {
	bo := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(5*time.Second)), ctx)
	err := backoff.Retry(func() error {
		_, err := p.pool.Exec(ctx, `UPDATE `+p.table+` SET replay_status = `+sqlRequested+` WHERE replay_status = `+sqlDelivering)
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

// claimedLetter is a dead letter claimed for a replay.
type claimedLetter struct {
	id    int64
	route string
	row   pgoutput.Row
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
	cs, err := p.claimRows(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for i := range cs {
		it := p.replayItem(ctx, &cs[i])
		if it == nil {
			continue
		}
		select {
		case p.claimed <- []*item{it}:
		case <-ctx.Done():
			return n, ctx.Err()
		}
		n++
	}
	return n, nil
}

// claimRows claims the rows; see claim.
func (p *replayer) claimRows(ctx context.Context) ([]claimedLetter, error) {
	rows, err := p.pool.Query(ctx, `WITH claimed AS (
		  UPDATE `+p.table+` SET replay_status = `+sqlDelivering+`
		  WHERE id IN (SELECT id FROM `+p.table+` WHERE replay_status = `+sqlRequested+` ORDER BY event_seq NULLS FIRST, id LIMIT $1 FOR UPDATE SKIP LOCKED)
		  RETURNING id, route, `+outboxschema.DeadLetterEventColumns+`, event_seq)
		SELECT id, route, `+outboxschema.DeadLetterEventColumns+` FROM claimed ORDER BY event_seq NULLS FIRST, id`, pgx.QueryResultFormats{pgx.BinaryFormatCode}, p.batchSize)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	eventCols := make([]any, len(outboxschema.ColumnNames(outboxschema.DeadLetterEventColumns))) // nil: read by ScanResult
	var cs []claimedLetter
	for rows.Next() {
		var c claimedLetter
		// The event's columns decode as a row of the events table does,
		// so a replay carries the values the stream would.
		err := rows.Scan(append([]any{&c.id, &c.route}, eventCols...)...)
		if err == nil {
			err = pgoutput.ScanResult(rows, 2, &c.row)
		}
		if err != nil {
			return nil, fmt.Errorf("replay: read claimed dead letter: %w", err)
		}
		cs = append(cs, c)
	}
	return cs, rows.Err()
}

// replayItem makes the item that replays c on its route, or records the
// replay as failed and returns nil when it cannot be replayed.
func (p *replayer) replayItem(ctx context.Context, c *claimedLetter) *item {
	var rt *route
	for _, r := range p.router.routes {
		if r.Name == c.route {
			rt = r
		}
	}
	msg := ""
	switch {
	case rt == nil:
		msg = fmt.Sprintf("route %q is not in the relay's config any more: add it back, or purge the dead letter", c.route)
	case c.row.Err != nil:
		msg = fmt.Sprintf("the dead letter's copy of the event cannot be decoded: %v", c.row.Err)
	}
	if msg != "" {
		p.logger.Warn("dead-letter replay failed", "dead_letter_id", c.id, "event_id", c.row.ID.String(), "error", msg)
		p.markFailed(ctx, c.id, msg)
		return nil
	}
	it := newItem(&c.row, nil)
	it.replay = &replayState{deadLetterID: c.id}
	it.ds = make([]*delivery, 0, 1)
	dl := it.addDelivery(rt, p.source)
	p.logger.Info("replaying dead letter", "dead_letter_id", c.id, "event_id", it.ev.ID.String(), "route", rt.Name, "destination", dl.msg.Destination)
	return it
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
		_, err := p.pool.Exec(ctx, `UPDATE `+p.table+` SET replay_status = `+sqlReplayed+`, replayed_at = now(), replay_count = replay_count + 1 WHERE id = $1`, it.replay.deadLetterID)
		return err
	}, bo)
	if err == nil {
		p.logger.Info("dead letter replayed", "dead_letter_id", it.replay.deadLetterID, "event_id", it.ev.ID.String(), "route", dl.route.Name)
	}
}

func (p *replayer) markFailed(ctx context.Context, id int64, msg string) {
	_, err := p.pool.Exec(ctx, `UPDATE `+p.table+` SET replay_status = `+sqlFailed+`, last_error = $2, last_failed_at = now(),
		errors = errors || jsonb_build_array($3::text) WHERE id = $1`, id, msg, time.Now().UTC().Format(time.RFC3339Nano)+" "+msg)
	if err != nil && ctx.Err() == nil {
		p.logger.Error("recording a failed replay failed", "dead_letter_id", id, "error", err)
	}
}
