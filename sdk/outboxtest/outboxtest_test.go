package outboxtest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/internal/exampledb"
	"github.com/outboxrelay/outbox/sdk/internal/testdb"
	"github.com/outboxrelay/outbox/sdk/outboxtest"
)

func TestMain(m *testing.M) { exampledb.Main(m) }

// fakeT records failures instead of failing the real test, so the helpers'
// failures can be checked.
type fakeT struct {
	testing.TB
	mu     sync.Mutex
	failed []string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = append(f.failed, fmt.Sprintf(format, args...))
}
func (f *fakeT) Errorf(format string, args ...any) { f.Fatalf(format, args...) }

type placed struct {
	Order string `json:"order"`
	Total int    `json:"total"`
}

// placeOrder is "the code under test": it writes through sdk.EventWriter.
func placeOrder(ctx context.Context, w sdk.EventWriter, tx sdk.Tx, id string, total int) error {
	e := sdk.Event{AggregateType: "order", AggregateID: id, EventType: "order.placed", Payload: fmt.Appendf(nil, `{"order":%q,"total":%d}`, id, total)}
	if total > 1000 {
		return w.WriteBatch(ctx, tx, []sdk.Event{e, {AggregateType: "order", AggregateID: id, EventType: "order.flagged", Payload: []byte(`{}`)}})
	}
	return w.Write(ctx, tx, &e)
}

func TestAssertWrittenInTransaction(t *testing.T) {
	t.Parallel()
	ob := testdb.New(t)
	ctx := context.Background()
	w, _ := sdk.New(&sdk.Config{Schema: ob.Schema})

	// A committed event from an earlier transaction is not "written by" the
	// transaction under test.
	if err := pgx.BeginFunc(ctx, ob.Pool, func(tx pgx.Tx) error { return placeOrder(ctx, w, tx, "old", 5) }); err != nil {
		t.Fatal(err)
	}

	tx, err := ob.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := placeOrder(ctx, w, tx, "o-1", 2000); err != nil {
		t.Fatal(err)
	}
	got := outboxtest.Written(t, tx, ob.Schema)
	if len(got) != 2 || got[0].EventType != "order.placed" || got[1].EventType != "order.flagged" {
		t.Fatalf("Written = %+v", got)
	}
	e := outboxtest.AssertWritten(t, tx, ob.Schema, "order.placed", outboxtest.JSONPayload(func(p placed) bool { return p.Order == "o-1" && p.Total == 2000 }))
	if e.AggregateID != "o-1" {
		t.Errorf("AssertWritten returned %+v", e)
	}
	outboxtest.AssertNotWritten(t, tx, ob.Schema, "order.cancelled")

	// The helpers fail when they should, saying what was written.
	ft := &fakeT{TB: t}
	outboxtest.AssertWritten(ft, tx, ob.Schema, "order.placed", outboxtest.JSONPayload(func(p placed) bool { return p.Order == "old" }))
	outboxtest.AssertWritten(ft, tx, ob.Schema, "order.cancelled", nil)
	outboxtest.AssertNotWritten(ft, tx, ob.Schema, "order.flagged")
	if len(ft.failed) != 3 || !strings.Contains(ft.failed[0], "order.placed order/o-1") || !strings.Contains(ft.failed[0], `"total":2000`) {
		t.Fatalf("failures = %q", ft.failed)
	}

	// The same through database/sql, and nothing after a rollback.
	db := stdlib.OpenDBFromPool(ob.Pool)
	defer db.Close()
	stx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stx.Rollback()
	if got := outboxtest.Written(t, stx, ob.Schema); len(got) != 0 {
		t.Fatalf("a fresh transaction has written %d events", len(got))
	}
	if err := placeOrder(ctx, w, stx, "o-2", 7); err != nil {
		t.Fatal(err)
	}
	outboxtest.AssertWritten(t, stx, ob.Schema, "order.placed", outboxtest.JSONPayload(func(p placed) bool { return p.Total == 7 }))
}

func TestRecorder(t *testing.T) {
	t.Parallel()
	r, err := outboxtest.NewRecorder(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := placeOrder(ctx, r, nil, "o-1", 10); err != nil {
		t.Fatal(err)
	}
	if err := placeOrder(ctx, r, nil, "o-2", 5000); err != nil {
		t.Fatal(err)
	}
	got := r.Events()
	if len(got) != 3 {
		t.Fatalf("%d events recorded, want 3", len(got))
	}
	for _, e := range got {
		if e.ID.Version() != 7 || e.SchemaVersion != "1.0" || e.ContentType != "application/json" || e.OccurredAt.IsZero() {
			t.Errorf("defaults not applied like Writer: %+v", e)
		}
	}
	r.AssertWritten(t, "order.flagged", func(e sdk.Event) bool { return e.AggregateID == "o-2" })
	r.AssertNotWritten(t, "order.cancelled")

	// Invalid events fail as with the real Writer, and are not recorded; a
	// bad batch records none of its events.
	err = r.Write(ctx, nil, &sdk.Event{AggregateType: "order", AggregateID: "x", EventType: "order.placed", Payload: []byte(`{`)})
	if !errors.Is(err, sdk.ErrInvalidJSON) {
		t.Errorf("Write of bad JSON: %v", err)
	}
	err = r.WriteBatch(ctx, nil, []sdk.Event{{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: []byte(`1`)}, {}})
	var ve *sdk.ValidationError
	if !errors.As(err, &ve) || ve.Index != 1 {
		t.Errorf("WriteBatch with a bad event: %v", err)
	}
	if err := r.Write(ctx, nil, nil); !errors.Is(err, sdk.ErrMissingField) {
		t.Errorf("Write(nil): %v", err)
	}
	if n := len(r.Events()); n != 3 {
		t.Fatalf("%d events after failed writes, want 3", n)
	}

	ft := &fakeT{TB: t}
	r.AssertWritten(ft, "order.placed", outboxtest.JSONPayload(func(p placed) bool { return p.Total == 99 }))
	r.AssertNotWritten(ft, "order.placed")
	if len(ft.failed) != 2 || !strings.Contains(ft.failed[0], "3 events") {
		t.Fatalf("failures = %q", ft.failed)
	}
	r.Reset()
	if len(r.Events()) != 0 {
		t.Fatal("Reset kept events")
	}
	if _, err := outboxtest.NewRecorder(&sdk.Config{Schema: "Bad"}); err == nil {
		t.Error("NewRecorder accepted a bad config")
	}
}

func TestRecorderConcurrent(t *testing.T) {
	t.Parallel()
	r, _ := outboxtest.NewRecorder(nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				if err := placeOrder(context.Background(), r, nil, fmt.Sprintf("o-%d-%d", i, j), j); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if n := len(r.Events()); n != 400 {
		t.Fatalf("%d events, want 400", n)
	}
}
