package relay_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/sdk"
)

// poisonText fails every event of type "bad.*" for good, with an error
// quoting bytes PostgreSQL cannot store as text: a NUL and invalid UTF-8 (a
// handler error built from the payload, a broker quoting the message).
type poisonText struct{ relay.Sink }

func (p *poisonText) Publish(ctx context.Context, msgs []*relay.Message) []error {
	errs := make([]error, len(msgs))
	var pass []*relay.Message
	var idx []int
	for i, m := range msgs {
		if strings.HasPrefix(m.Event.EventType, "bad.") {
			errs[i] = sink.Permanentf("handler: cannot decode \x00 at byte 3 of \xff\xfe%s", strings.Repeat("x", 100_000))
			continue
		}
		pass = append(pass, m)
		idx = append(idx, i)
	}
	if len(pass) > 0 {
		for j, err := range p.Sink.Publish(ctx, pass) {
			errs[idx[j]] = err
		}
	}
	return errs
}

// TestDeadLetterWithUnstorableError: a dead letter whose error holds a NUL
// and invalid UTF-8 is stored (escaped, cut to a bounded length), the key's
// next event is delivered, and the slot's position moves past both.
func TestDeadLetterWithUnstorableError(t *testing.T) {
	t.Parallel()
	b := setup(t, "routes:\n  - {name: r, match: '*', sink: bus, destination: 'PREFIX.ok.{{.EventType}}'}\n",
		nil, func(s relay.Sink) relay.Sink { return &poisonText{Sink: s} })
	ctx := context.Background()
	// Two transactions, one key: the second waits for the first's outcome.
	b.write(t, ctx, sdk.Event{AggregateType: "a", AggregateID: "1", EventType: "bad.one", ContentType: "application/octet-stream", Payload: []byte("\x00\xff{}")})
	b.write(t, ctx, sdk.Event{AggregateType: "a", AggregateID: "1", EventType: "good.two", Payload: []byte(`{}`)})
	var end string
	if err := b.o.Pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		t.Fatal(err)
	}

	got := b.consume(t, 1)
	if s := got[0].Subject(); !strings.HasSuffix(s, ".good.two") {
		t.Fatalf("delivered %s, want the key's next event good.two", s)
	}
	var lastError, errs string
	var payload []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := b.o.Pool.QueryRow(ctx, "SELECT last_error, errors::text, payload FROM "+b.o.Schema+".dead_letters WHERE event_type = 'bad.one'").
			Scan(&lastError, &errs, &payload)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter for bad.one: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(payload) != "\x00\xff{}" {
		t.Errorf("payload %q, want the exact bytes", payload)
	}
	if !utf8.ValidString(lastError) || !strings.Contains(lastError, `cannot decode \x00 at byte 3 of \xff\xfexxx`) {
		t.Errorf("last_error %.100q: want the NUL and the invalid bytes escaped", lastError)
	}
	if len(lastError) > 10_000 || !strings.Contains(lastError, "bytes cut") {
		t.Errorf("last_error is %d bytes, want it cut to about 8 KiB with a marker", len(lastError))
	}
	var list []string
	if err := json.Unmarshal([]byte(errs), &list); err != nil || len(list) != 1 || !strings.Contains(list[0], `\x00 at byte 3 of \xff\xfe`) {
		t.Errorf("errors %.200s (%v): want one entry, escaped", errs, err)
	}

	// Both rows marked, and the slot confirmed past them.
	deadline = time.Now().Add(30 * time.Second)
	for {
		var undelivered int
		var past bool
		if err := b.o.Pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+b.o.Schema+".events WHERE delivered_at IS NULL), "+
			"coalesce((SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1), false)", b.o.Slot, end).
			Scan(&undelivered, &past); err != nil {
			t.Fatal(err)
		}
		if undelivered == 0 && past {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows undelivered, slot past %s: %v", undelivered, end, past)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
