package relay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
)

// picky is a sink that refuses, permanently, the messages refuse picks,
// fails those hold picks with a transient error, and records the others in
// order.
type picky struct {
	mu        sync.Mutex
	refuse    func(n int) bool
	hold      func(n int) bool
	attempts  int
	delivered []relay.Message
}

func payloadN(m *relay.Message) int {
	var n int
	fmt.Sscanf(string(m.Event.Payload), `{"n": %d}`, &n)
	return n
}

func (p *picky) Publish(_ context.Context, msgs []*relay.Message) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for i, m := range msgs {
		p.attempts++
		if n := payloadN(m); p.refuse(n) || (p.hold != nil && p.hold(n)) {
			if errs == nil {
				errs = make([]error, len(msgs))
			}
			errs[i] = errors.New("test: not now")
			if p.refuse(n) {
				errs[i] = sink.Permanentf("test: refused")
			}
			continue
		}
		c := *m
		ev := *m.Event
		c.Event = &ev
		p.delivered = append(p.delivered, c)
	}
	return errs
}

func (p *picky) Close() error { return nil }

func (p *picky) set(refuse func(n int) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = refuse
}

func (p *picky) setHold(hold func(n int) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = hold
}

func (p *picky) got() []relay.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]relay.Message(nil), p.delivered...)
}

// TestReplayFollowsCommitOrder: a key's dead letters are not always written
// in the key's commit order. Here the later events of each key fail first;
// the earlier ones were delivered, but their marks were lost (as in a crash
// before marking), so a new slot's snapshot sends them again, and they fail
// then: their dead letters have the higher ids. A replay of them all
// delivers each key's events in commit order, as the stream would, and the
// dead letters record the events' seq.
func TestReplayFollowsCommitOrder(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	const keys, perKey = 3, 4 // n = 0..3 on each key; the events with n >= 2 fail first
	sink := &picky{refuse: func(n int) bool { return n >= 2 }}
	routes := "routes:\n  - {name: r, match: '*', sink: rec, destination: x}\n"
	run := startRecording(t, o, o.DatabaseURL, sink, routes)
	run.waitFor(t, "streaming", func() bool { return run.r.Health(ctx).Streaming })
	for n := range perKey {
		for k := range keys {
			if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload)
				VALUES ('k', $1, 'e', $2)`, fmt.Sprint(k), fmt.Appendf(nil, `{"n": %d}`, n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadLetters := func() int {
		var n int
		o.Pool.QueryRow(ctx, `SELECT count(*) FROM `+o.Schema+`.dead_letters`).Scan(&n)
		return n
	}
	run.waitFor(t, "the later events dead-lettered", func() bool { return deadLetters() == keys*2 && len(sink.got()) == keys*2 })

	// The marks of the earlier events are lost; a new slot's snapshot sends
	// them again, and now they fail.
	run.stop(t)
	testutil.DropSlot(t, o.Pool, o.Slot)
	if _, err := o.Pool.Exec(ctx, `UPDATE `+o.Schema+`.events SET delivered_at = NULL WHERE payload IN ('{"n": 0}', '{"n": 1}')`); err != nil {
		t.Fatal(err)
	}
	sink.set(func(int) bool { return true })
	run = startRecording(t, o, o.DatabaseURL, sink, routes)
	run.waitFor(t, "the earlier events dead-lettered", func() bool { return deadLetters() == keys*perKey })

	// Replay them all.
	before := len(sink.got())
	sink.set(func(int) bool { return false })
	if _, err := o.Pool.Exec(ctx, `UPDATE `+o.Schema+`.dead_letters SET replay_status = 'requested', replay_requested_at = now()`); err != nil {
		t.Fatal(err)
	}
	run.waitFor(t, "the replays", func() bool { return len(sink.got()) >= before+keys*perKey })
	replayed := sink.got()[before:]
	if inv, seq := perKeyInversions(replayed); inv > 0 {
		t.Errorf("%d per-key inversions in the replay; order per key (n): %v", inv, seq)
	}

	var wrong int
	if err := o.Pool.QueryRow(ctx, `SELECT count(*) FROM `+o.Schema+`.dead_letters d JOIN `+o.Schema+`.events e ON e.id = d.event_id
		WHERE d.event_seq IS DISTINCT FROM e.seq`).Scan(&wrong); err != nil {
		t.Fatal(err)
	}
	if wrong > 0 {
		t.Errorf("%d dead letters do not record their event's seq", wrong)
	}
}

// TestReplayWaitsForTheKeyInFlight: a replayed event goes behind a delivery
// of its key and route still in flight, never past it. The earlier event of
// the key (n = 0) is being retried (as after a crash, when it is sent again
// while the later one, n = 1, was dead-lettered before the crash); the replay
// of n = 1 is requested meanwhile and waits for n = 0.
func TestReplayWaitsForTheKeyInFlight(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	sink := &picky{refuse: func(int) bool { return false }, hold: func(n int) bool { return n == 0 }}
	run := startRecording(t, o, o.DatabaseURL, sink, "routes:\n  - {name: r, match: '*', sink: rec, destination: x, retry: {max_attempts: 1000000, initial_interval: 10ms, max_interval: 50ms}}\n")
	run.waitFor(t, "streaming", func() bool { return run.r.Health(ctx).Streaming })
	var later string
	if err := o.Pool.QueryRow(ctx, `INSERT INTO `+o.Schema+`.dead_letters (event_id, aggregate_type, aggregate_id, event_type,
		schema_version, payload, content_type, occurred_at, created_at, route, sink, destination, attempts, last_error,
		first_failed_at, last_failed_at, event_seq) VALUES (`+o.Schema+`.uuid_generate_v7(), 'k', '1', 'e', '1.0', '{"n": 1}', 'application/json',
		now(), now(), 'r', 'rec', 'x', 1, 'boom', now(), now(), 2) RETURNING event_id::text`).Scan(&later); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload) VALUES ('k', '1', 'e', '{"n": 0}')`); err != nil {
		t.Fatal(err)
	}
	run.waitFor(t, "the earlier event retried", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.attempts >= 2
	})
	if _, err := o.Pool.Exec(ctx, `UPDATE `+o.Schema+`.dead_letters SET replay_status = 'requested', replay_requested_at = now()`); err != nil {
		t.Fatal(err)
	}
	run.waitFor(t, "the replay claimed", func() bool { return strings.Contains(run.logs.String(), "replaying dead letter") })
	// Were the replay not to wait, it would be sent now, while n = 0 is
	// held (a slow machine can only hide that, never fail the test).
	time.Sleep(200 * time.Millisecond)
	sink.setHold(nil)
	run.waitFor(t, "both delivered", func() bool { return len(sink.got()) == 2 })
	if got := sink.got(); payloadN(&got[0]) != 0 || got[1].Event.ID.String() != later {
		t.Errorf("delivered n = %d then n = %d; want the event in flight (0) before the replay (1)", payloadN(&got[0]), payloadN(&got[1]))
	}
}
