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
)

// picky is a sink that refuses, permanently, the messages refuse picks, and
// records the others in order.
type picky struct {
	mu        sync.Mutex
	refuse    func(n int) bool
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
		if p.refuse(payloadN(m)) {
			if errs == nil {
				errs = make([]error, len(msgs))
			}
			errs[i] = relay.Permanentf("test: refused")
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

// TestRelayNeedsMigration3: on a schema without dead_letters.event_seq the
// relay refuses to start, saying to migrate, rather than failing every
// dead-letter write (which would hold the key and the slot).
func TestRelayNeedsMigration3(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	if _, err := o.Pool.Exec(context.Background(), "ALTER TABLE "+o.Schema+".dead_letters DROP COLUMN event_seq"); err != nil {
		t.Fatal(err)
	}
	run := startRecording(t, o, o.DatabaseURL, &recorder{}, "routes:\n  - {name: r, match: '*', sink: rec, destination: x}\n")
	select {
	case err := <-run.done:
		run.cancel = nil
		if !errors.Is(err, relay.ErrNotMigrated) || !strings.Contains(err.Error(), "outbox migrate up") {
			t.Errorf("relay.Run: %v, want ErrNotMigrated with the command to run", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not stop")
	}
}
