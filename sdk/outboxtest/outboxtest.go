// Package outboxtest helps applications test the code that writes outbox
// events.
//
// Against a real database, [Written] lists the events a transaction has
// written so far and [AssertWritten] fails the test unless one of them has the
// expected type and a matching payload; run them on the transaction under
// test before it commits (or instead of committing).
//
// Without a database, [Recorder] stands in for *sdk.Writer: code that depends
// on [sdk.EventWriter] gets a Recorder in unit tests. It validates exactly
// like the real Writer (same errors, same defaults, same captured trace
// context) and keeps the events in memory.
package outboxtest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/internal/dbx"
	"github.com/outboxrelay/outbox/sdk/internal/eventrow"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// Written returns the events tx has written to the outbox in schema ("" means
// "outbox"), in insertion order (seq). It recognises them as the visible rows
// whose created_at is the transaction's start time (now() in tx), which is
// exact unless another committed transaction that wrote to the same outbox
// started in the same microsecond: give each test its own schema.
func Written(t testing.TB, tx sdk.Tx, schema string) []sdk.Event {
	t.Helper()
	schema = cmp.Or(schema, "outbox")
	if err := outboxschema.ValidateName("schema", schema); err != nil {
		t.Fatalf("outboxtest: %v", err)
		return nil
	}
	var out []sdk.Event
	err := dbx.Query(context.Background(), tx,
		"SELECT "+eventrow.Columns+" FROM "+outboxschema.Quote(schema)+".events WHERE created_at = now() ORDER BY seq",
		nil, func(scan func(...any) error) error {
			r, err := eventrow.Scan(scan)
			out = append(out, r.Event)
			return err
		})
	if err != nil {
		t.Fatalf("outboxtest: read events written by the transaction: %v", err)
		return nil
	}
	return out
}

// AssertWritten fails t unless tx has written an event of eventType for which
// match (nil: any) returns true, and returns the first such event.
func AssertWritten(t testing.TB, tx sdk.Tx, schema, eventType string, match func(sdk.Event) bool) sdk.Event {
	t.Helper()
	return find(t, Written(t, tx, schema), eventType, match, "the transaction")
}

// AssertNotWritten fails t if tx has written an event of eventType.
func AssertNotWritten(t testing.TB, tx sdk.Tx, schema, eventType string) {
	t.Helper()
	refute(t, Written(t, tx, schema), eventType, "the transaction")
}

// JSONPayload returns a match function for AssertWritten that decodes the
// payload as JSON into a T and applies pred to it. A payload that does not
// decode does not match.
func JSONPayload[T any](pred func(T) bool) func(sdk.Event) bool {
	return func(e sdk.Event) bool {
		var v T
		if err := json.Unmarshal(e.Payload, &v); err != nil {
			return false
		}
		return pred(v)
	}
}

func find(t testing.TB, events []sdk.Event, eventType string, match func(sdk.Event) bool, where string) sdk.Event {
	t.Helper()
	for _, e := range events {
		if e.EventType == eventType && (match == nil || match(e)) {
			return e
		}
	}
	t.Fatalf("outboxtest: %s wrote no %s event that matches; it wrote %s", where, eventType, describe(events))
	return sdk.Event{}
}

func refute(t testing.TB, events []sdk.Event, eventType, where string) {
	t.Helper()
	for _, e := range events {
		if e.EventType == eventType {
			t.Fatalf("outboxtest: %s wrote a %s event, want none: %s", where, eventType, describe([]sdk.Event{e}))
			return
		}
	}
}

func describe(events []sdk.Event) string {
	if len(events) == 0 {
		return "no events"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d events:", len(events))
	for _, e := range events {
		p := string(e.Payload)
		if !sdk.IsJSONContentType(e.ContentType) {
			p = fmt.Sprintf("<%d bytes of %s>", len(e.Payload), e.ContentType)
		} else if len(p) > 200 {
			p = p[:200] + "..."
		}
		fmt.Fprintf(&b, "\n\t%s %s/%s v%s %s", e.EventType, e.AggregateType, e.AggregateID, e.SchemaVersion, p)
	}
	return b.String()
}

// Recorder is an in-memory sdk.EventWriter for unit tests. It validates and
// fills in events exactly like *sdk.Writer, and records what was written.
// It cannot see commits or rollbacks: it records every successful call,
// whatever transaction (nil included) it was given. Safe for concurrent use.
type Recorder struct {
	w      *sdk.Writer
	mu     sync.Mutex
	events []sdk.Event
}

var _ sdk.EventWriter = (*Recorder)(nil)

// NewRecorder returns a Recorder validating with cfg's limits (nil: defaults).
func NewRecorder(cfg *sdk.Config) (*Recorder, error) {
	w, err := sdk.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Recorder{w: w}, nil
}

// Write records e as sdk.Writer.Write would write it.
func (r *Recorder) Write(ctx context.Context, _ sdk.Tx, e *sdk.Event) error {
	if e == nil {
		return r.w.Write(ctx, nil, e)
	}
	p, err := r.w.Prepare(ctx, *e)
	if err != nil {
		return err
	}
	*e = p
	r.mu.Lock()
	r.events = append(r.events, p)
	r.mu.Unlock()
	return nil
}

// WriteBatch records events as sdk.Writer.WriteBatch would write them: all or
// none.
func (r *Recorder) WriteBatch(ctx context.Context, _ sdk.Tx, events []sdk.Event) error {
	p, err := r.w.PrepareBatch(ctx, events)
	if err != nil {
		return err
	}
	copy(events, p)
	r.mu.Lock()
	r.events = append(r.events, p...)
	r.mu.Unlock()
	return nil
}

// Events returns a copy of the events recorded so far, in write order.
func (r *Recorder) Events() []sdk.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sdk.Event(nil), r.events...)
}

// Reset forgets the recorded events.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.events = nil
	r.mu.Unlock()
}

// AssertWritten fails t unless an event of eventType matching match (nil:
// any) was recorded, and returns the first such event.
func (r *Recorder) AssertWritten(t testing.TB, eventType string, match func(sdk.Event) bool) sdk.Event {
	t.Helper()
	return find(t, r.Events(), eventType, match, "the code under test")
}

// AssertNotWritten fails t if an event of eventType was recorded.
func (r *Recorder) AssertNotWritten(t testing.TB, eventType string) {
	t.Helper()
	refute(t, r.Events(), eventType, "the code under test")
}
