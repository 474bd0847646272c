package sdk_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/internal/eventrow"
	"github.com/outboxrelay/outbox/sdk/internal/exampledb"
	"github.com/outboxrelay/outbox/sdk/internal/testdb"
)

func TestMain(m *testing.M) { exampledb.Main(m) }

type bundle struct {
	ob *testdb.Outbox
	w  *sdk.Writer
	db *sql.DB
}

func setup(t *testing.T) *bundle {
	t.Helper()
	ob := testdb.New(t)
	w, err := sdk.New(&sdk.Config{Schema: ob.Schema})
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDBFromPool(ob.Pool)
	t.Cleanup(func() { db.Close() })
	return &bundle{ob: ob, w: w, db: db}
}

// stored reads every committed event of the outbox in (created_at, id) order.
func (b *bundle) stored(t *testing.T) []eventrow.Row {
	t.Helper()
	rows, err := b.ob.Pool.Query(context.Background(), "SELECT "+eventrow.Columns+" FROM "+b.ob.Schema+".events ORDER BY created_at, id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []eventrow.Row
	for rows.Next() {
		r, err := eventrow.Scan(rows.Scan)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// txKind runs a subtest for each kind of transaction the SDK accepts.
type txKind struct {
	name  string
	begin func(t *testing.T, b *bundle) (tx sdk.Tx, commit, rollback func() error)
}

var txKinds = []txKind{
	{"pgx", func(t *testing.T, b *bundle) (sdk.Tx, func() error, func() error) {
		ctx := context.Background()
		tx, err := b.ob.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Rollback(ctx) })
		return tx, func() error { return tx.Commit(ctx) }, func() error { return tx.Rollback(ctx) }
	}},
	{"pgx/exec", beginMode(pgx.QueryExecModeExec)},
	{"pgx/simple_protocol", beginMode(pgx.QueryExecModeSimpleProtocol)},
	{"database/sql", func(t *testing.T, b *bundle) (sdk.Tx, func() error, func() error) {
		tx, err := b.db.BeginTx(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Rollback() })
		return tx, tx.Commit, tx.Rollback
	}},
}

// beginMode begins a transaction on a connection of its own that uses mode
// (the modes PgBouncer users pick), instead of pgx's default statement cache.
func beginMode(mode pgx.QueryExecMode) func(t *testing.T, b *bundle) (sdk.Tx, func() error, func() error) {
	return func(t *testing.T, b *bundle) (sdk.Tx, func() error, func() error) {
		ctx := context.Background()
		cfg, err := pgx.ParseConfig(b.ob.DatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = mode
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(ctx) })
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Rollback(ctx) })
		return tx, func() error { return tx.Commit(ctx) }, func() error { return tx.Rollback(ctx) }
	}
}

func eachTx(t *testing.T, f func(t *testing.T, b *bundle, k txKind)) {
	for _, k := range txKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			f(t, setup(t), k)
		})
	}
}

func equalEvent(t *testing.T, got, want sdk.Event) {
	t.Helper()
	if !got.OccurredAt.Equal(want.OccurredAt) {
		t.Errorf("OccurredAt = %v, want %v", got.OccurredAt, want.OccurredAt)
	}
	got.OccurredAt, want.OccurredAt = time.Time{}, time.Time{}
	if len(got.Headers) == 0 && len(want.Headers) == 0 {
		got.Headers, want.Headers = nil, nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stored event differs\n got %+v\nwant %+v", got, want)
	}
}

func TestWriteDefaults(t *testing.T) {
	t.Parallel()
	eachTx(t, func(t *testing.T, b *bundle, k txKind) {
		ctx := context.Background()
		tx, commit, _ := k.begin(t, b)
		before := time.Now()
		e := &sdk.Event{AggregateType: "order", AggregateID: "42", EventType: "order.created", Payload: []byte(`{"total":100}`)}
		if err := b.w.Write(ctx, tx, e); err != nil {
			t.Fatal(err)
		}
		if e.ID.Version() != 7 {
			t.Errorf("ID %s is version %d, want a UUIDv7", e.ID, e.ID.Version())
		}
		if e.SchemaVersion != "1.0" || e.ContentType != "application/json" {
			t.Errorf("defaults: version %q content type %q", e.SchemaVersion, e.ContentType)
		}
		if e.OccurredAt.Before(before.Add(-time.Millisecond)) || e.OccurredAt.After(time.Now().Add(time.Millisecond)) {
			t.Errorf("OccurredAt %v is not now", e.OccurredAt)
		}
		if err := commit(); err != nil {
			t.Fatal(err)
		}
		got := b.stored(t)
		if len(got) != 1 {
			t.Fatalf("%d rows stored, want 1", len(got))
		}
		equalEvent(t, got[0].Event, *e)
		if got[0].Event.TenantID != "" {
			t.Errorf("tenant %q, want NULL", got[0].Event.TenantID)
		}
		var tenantNull bool
		if err := b.ob.Pool.QueryRow(ctx, "SELECT tenant_id IS NULL FROM "+b.ob.Schema+".events").Scan(&tenantNull); err != nil || !tenantNull {
			t.Errorf("tenant_id IS NULL = %v (%v), want true", tenantNull, err)
		}
	})
}

// odd returns n events that exercise every column: explicit and default ids,
// binary payloads with every byte value, quotes and backslashes and non-ASCII
// text in headers, NULL and set tenants, other content types.
func odd(n int) []sdk.Event {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	events := make([]sdk.Event, n)
	for i := range events {
		e := sdk.Event{
			AggregateType: "order",
			AggregateID:   fmt.Sprintf("o-%d", i%7),
			EventType:     "order.item_added",
			Payload:       fmt.Appendf(nil, `{"i":%d,"s":"quote \" backslash \\ é"}`, i),
		}
		switch i % 4 {
		case 1:
			e.ID = uuid.New()
			e.SchemaVersion = "2.13"
			e.ContentType = "application/x-protobuf"
			e.Payload = append([]byte{byte(i)}, all...)
			e.TenantID = "tenant \"a\" {b},c\\"
		case 2:
			e.Headers = map[string]string{"x-user": `a "quoted", {braced} \ value`, "ünï": "çødé", "empty": ""}
			e.OccurredAt = time.Date(2020, 2, 29, 23, 59, 59, 123456000, time.FixedZone("x", 5*3600+1800))
			e.ContentType = "application/vnd.order+json; charset=utf-8"
		case 3:
			e.AggregateID = "NULL"
			e.TenantID = "NULL"
		}
		events[i] = e
	}
	return events
}

func TestWriteBatch(t *testing.T) {
	t.Parallel()
	eachTx(t, func(t *testing.T, b *bundle, k txKind) {
		ctx := context.Background()
		tx, commit, _ := k.begin(t, b)
		events := odd(100)
		if err := b.w.WriteBatch(ctx, tx, events); err != nil {
			t.Fatal(err)
		}
		if err := commit(); err != nil {
			t.Fatal(err)
		}
		got := b.stored(t)
		if len(got) != len(events) {
			t.Fatalf("%d rows stored, want %d", len(got), len(events))
		}
		// One transaction: one created_at; the SDK's UUIDv7 ids are
		// monotonic, so (created_at, id) order is slice order for them.
		byID := map[uuid.UUID]sdk.Event{}
		for _, r := range got {
			byID[r.Event.ID] = r.Event
			if !r.CreatedAt.Equal(got[0].CreatedAt) {
				t.Errorf("created_at differs within one transaction")
			}
		}
		var last uuid.UUID
		for i, e := range events {
			if e.ID == uuid.Nil {
				t.Fatalf("event %d: ID not filled in", i)
			}
			equalEvent(t, byID[e.ID], e)
			if e.ID.Version() == 7 {
				if strings.Compare(e.ID.String(), last.String()) <= 0 {
					t.Errorf("event %d: generated id %s not after %s", i, e.ID, last)
				}
				last = e.ID
			}
		}
		// Insert order is slice order (the order the relay replicates):
		// seq numbers rows as they are inserted. (Heap order, ctid, is not
		// insertion order: a row that does not fit the page being filled
		// goes to another.)
		var ids []uuid.UUID
		rows, _ := b.ob.Pool.Query(ctx, "SELECT id FROM "+b.ob.Schema+".events ORDER BY seq")
		for rows.Next() {
			var id uuid.UUID
			rows.Scan(&id)
			ids = append(ids, id)
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		for i := range events {
			if ids[i] != events[i].ID {
				t.Fatalf("row %d inserted is %s, want event %d %s", i, ids[i], i, events[i].ID)
			}
		}
	})
}

func TestWriteBatchEmpty(t *testing.T) {
	t.Parallel()
	w, _ := sdk.New(nil)
	// Nothing is sent, so no connection is needed at all...
	if err := w.WriteBatch(context.Background(), (*sql.Tx)(nil), nil); err != nil {
		t.Fatal(err)
	}
	// ...but the transaction type is still checked.
	if err := w.WriteBatch(context.Background(), "tx", nil); !errors.Is(err, sdk.ErrUnsupportedTx) {
		t.Fatalf("err = %v, want ErrUnsupportedTx", err)
	}
}

func TestRollbackWritesNothing(t *testing.T) {
	t.Parallel()
	eachTx(t, func(t *testing.T, b *bundle, k txKind) {
		ctx := context.Background()
		tx, _, rollback := k.begin(t, b)
		e := &sdk.Event{AggregateType: "order", AggregateID: "1", EventType: "order.created", Payload: []byte(`{}`)}
		if err := b.w.Write(ctx, tx, e); err != nil {
			t.Fatal(err)
		}
		if err := b.w.WriteBatch(ctx, tx, odd(10)); err != nil {
			t.Fatal(err)
		}
		if err := rollback(); err != nil {
			t.Fatal(err)
		}
		if got := b.stored(t); len(got) != 0 {
			t.Fatalf("%d rows after rollback, want 0", len(got))
		}
	})
}

func TestTraceContext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, _ := trace.ParseTraceState("vendor=abc")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)

	tx, err := b.ob.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	userHeaders := map[string]string{"x-request-id": "r1"}
	traced := &sdk.Event{AggregateType: "a", AggregateID: "1", EventType: "t", Payload: []byte(`1`), Headers: userHeaders}
	explicit := &sdk.Event{AggregateType: "a", AggregateID: "1", EventType: "t", Payload: []byte(`2`),
		Headers: map[string]string{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}}
	untraced := &sdk.Event{AggregateType: "a", AggregateID: "1", EventType: "t", Payload: []byte(`3`)}
	if err := b.w.Write(ctx, tx, traced); err != nil {
		t.Fatal(err)
	}
	if err := b.w.Write(ctx, tx, explicit); err != nil {
		t.Fatal(err)
	}
	if err := b.w.Write(context.Background(), tx, untraced); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if len(userHeaders) != 1 {
		t.Errorf("the caller's header map was modified: %v", userHeaders)
	}
	got := b.stored(t)
	want := []map[string]string{
		{"x-request-id": "r1", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=abc"},
		{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "tracestate": "vendor=abc"},
		nil,
	}
	for i, w := range want {
		if !reflect.DeepEqual(got[i].Event.Headers, w) {
			t.Errorf("event %d headers = %v, want %v", i, got[i].Event.Headers, w)
		}
	}
	if !reflect.DeepEqual(traced.Headers, want[0]) {
		t.Errorf("Write set Headers to %v, want the stored %v", traced.Headers, want[0])
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	good := func() sdk.Event {
		return sdk.Event{AggregateType: "order", AggregateID: "1", EventType: "order.created", Payload: []byte(`{"a":1}`)}
	}
	long := strings.Repeat("x", sdk.MaxFieldBytes+1)
	cases := []struct {
		name   string
		mod    func(e *sdk.Event)
		field  string
		target error
	}{
		{"no aggregate type", func(e *sdk.Event) { e.AggregateType = "" }, "aggregate_type", sdk.ErrMissingField},
		{"no aggregate id", func(e *sdk.Event) { e.AggregateID = "" }, "aggregate_id", sdk.ErrMissingField},
		{"no event type", func(e *sdk.Event) { e.EventType = "" }, "event_type", sdk.ErrMissingField},
		{"nil payload", func(e *sdk.Event) { e.Payload = nil }, "payload", sdk.ErrMissingField},
		{"empty payload", func(e *sdk.Event) { e.Payload = []byte{} }, "payload", sdk.ErrMissingField},
		{"payload too large", func(e *sdk.Event) { e.Payload = []byte(`"` + strings.Repeat("x", 1<<20) + `"`) }, "payload", sdk.ErrPayloadTooLarge},
		{"invalid JSON", func(e *sdk.Event) { e.Payload = []byte(`{"a":`) }, "payload", sdk.ErrInvalidJSON},
		{"invalid +json", func(e *sdk.Event) { e.ContentType = "application/cloudevents+json"; e.Payload = []byte(`nope`) }, "payload", sdk.ErrInvalidJSON},
		{"invalid JSON with charset", func(e *sdk.Event) { e.ContentType = "Application/JSON; charset=utf-8"; e.Payload = []byte(`{`) }, "payload", sdk.ErrInvalidJSON},
		{"bad content type", func(e *sdk.Event) { e.ContentType = "json" }, "content_type", sdk.ErrInvalidField},
		{"unparsable content type", func(e *sdk.Event) { e.ContentType = "application/json; charset" }, "content_type", sdk.ErrInvalidField},
		{"version without minor", func(e *sdk.Event) { e.SchemaVersion = "1" }, "schema_version", sdk.ErrInvalidField},
		{"version with patch", func(e *sdk.Event) { e.SchemaVersion = "1.0.0" }, "schema_version", sdk.ErrInvalidField},
		{"version with v", func(e *sdk.Event) { e.SchemaVersion = "v1.0" }, "schema_version", sdk.ErrInvalidField},
		{"version leading zero", func(e *sdk.Event) { e.SchemaVersion = "01.0" }, "schema_version", sdk.ErrInvalidField},
		{"version negative", func(e *sdk.Event) { e.SchemaVersion = "1.-1" }, "schema_version", sdk.ErrInvalidField},
		{"NUL in aggregate id", func(e *sdk.Event) { e.AggregateID = "a\x00b" }, "aggregate_id", sdk.ErrInvalidField},
		{"bad UTF-8 in event type", func(e *sdk.Event) { e.EventType = "order.\xff" }, "event_type", sdk.ErrInvalidField},
		{"NUL in tenant", func(e *sdk.Event) { e.TenantID = "\x00" }, "tenant_id", sdk.ErrInvalidField},
		{"long aggregate type", func(e *sdk.Event) { e.AggregateType = long }, "aggregate_type", sdk.ErrInvalidField},
		{"empty header name", func(e *sdk.Event) { e.Headers = map[string]string{"": "v"} }, "headers", sdk.ErrInvalidField},
		{"NUL in header value", func(e *sdk.Event) { e.Headers = map[string]string{"k": "a\x00"} }, "headers.k", sdk.ErrInvalidField},
		{"bad UTF-8 in header name", func(e *sdk.Event) { e.Headers = map[string]string{"\xc3": "v"} }, "headers", sdk.ErrInvalidField},
		{"headers too large", func(e *sdk.Event) { e.Headers = map[string]string{"big": strings.Repeat("x", 64<<10)} }, "headers", sdk.ErrHeadersTooLarge},
	}
	eachTx(t, func(t *testing.T, b *bundle, k txKind) {
		ctx := context.Background()
		tx, commit, _ := k.begin(t, b)
		for _, c := range cases {
			e := good()
			c.mod(&e)
			before := e
			err := b.w.Write(ctx, tx, &e)
			var ve *sdk.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, c.target) || ve.Field != c.field {
				t.Errorf("%s: Write err = %v (field %v), want %v on %s", c.name, err, ve, c.target, c.field)
				continue
			}
			if !reflect.DeepEqual(e, before) {
				t.Errorf("%s: a failed Write changed the event", c.name)
			}
			// In a batch, the bad event fails the whole batch and the
			// error names its position.
			batch := []sdk.Event{good(), good(), e, good()}
			err = b.w.WriteBatch(ctx, tx, batch)
			if !errors.As(err, &ve) || !errors.Is(err, c.target) || ve.Index != 2 || ve.Field != c.field {
				t.Errorf("%s: WriteBatch err = %v, want %v at index 2", c.name, err, c.target)
			}
			if batch[0].ID != uuid.Nil {
				t.Errorf("%s: a failed WriteBatch filled in the good events", c.name)
			}
		}
		// Several bad events: every one is reported.
		bad1, bad2 := good(), good()
		bad1.EventType, bad2.Payload = "", []byte("{")
		err := b.w.WriteBatch(ctx, tx, []sdk.Event{bad1, good(), bad2})
		if !errors.Is(err, sdk.ErrMissingField) || !errors.Is(err, sdk.ErrInvalidJSON) {
			t.Errorf("WriteBatch with two bad events: %v, want both errors", err)
		}
		if err := b.w.Write(ctx, tx, nil); !errors.Is(err, sdk.ErrMissingField) {
			t.Errorf("Write(nil) = %v", err)
		}
		// The transaction is still usable (nothing failed on the server) and
		// nothing was written.
		if err := commit(); err != nil {
			t.Fatal(err)
		}
		if got := b.stored(t); len(got) != 0 {
			t.Fatalf("%d rows written by invalid events, want 0", len(got))
		}
	})
}

func TestValidationAccepts(t *testing.T) {
	t.Parallel()
	w, err := sdk.New(&sdk.Config{MaxPayloadBytes: 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, e := range []sdk.Event{
		{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: []byte(`"123456"`)},
		{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: []byte("\x00\xff"), ContentType: "application/octet-stream"},
		{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: []byte(`[1]`), SchemaVersion: "0.0"},
		{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: []byte(`[1]`), SchemaVersion: "123456789.10"},
		{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: []byte(`not json`), ContentType: "text/plain; charset=utf-8"},
	} {
		if _, err := w.Prepare(ctx, e); err != nil {
			t.Errorf("%+v: %v", e, err)
		}
	}
	_, err = w.Prepare(ctx, sdk.Event{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: []byte(`"1234567890"`)})
	if !errors.Is(err, sdk.ErrPayloadTooLarge) {
		t.Errorf("11-byte payload with a 10-byte limit: %v", err)
	}
}

func TestUnsupportedTx(t *testing.T) {
	t.Parallel()
	w, _ := sdk.New(nil)
	e := &sdk.Event{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: []byte(`{}`)}
	for _, tx := range []sdk.Tx{nil, 42, struct{}{}} {
		if err := w.Write(context.Background(), tx, e); !errors.Is(err, sdk.ErrUnsupportedTx) {
			t.Errorf("Write with %T: %v, want ErrUnsupportedTx", tx, err)
		}
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []*sdk.Config{{Schema: "Bad-Name"}, {MaxPayloadBytes: -1}, {MaxHeaderBytes: -1}} {
		if _, err := sdk.New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	w, err := sdk.New(nil)
	if err != nil || w.Schema() != "outbox" {
		t.Fatalf("New(nil) = %v, %v", w, err)
	}
}

func TestDatabaseErrorIsReturned(t *testing.T) {
	t.Parallel()
	eachTx(t, func(t *testing.T, b *bundle, k txKind) {
		ctx := context.Background()
		tx, _, _ := k.begin(t, b)
		e := &sdk.Event{AggregateType: "a", AggregateID: "b", EventType: "c", Payload: []byte(`{}`)}
		if err := b.w.Write(ctx, tx, e); err != nil {
			t.Fatal(err)
		}
		dup := *e
		err := b.w.Write(ctx, tx, &dup)
		if err == nil || !strings.Contains(err.Error(), "duplicate key") {
			t.Fatalf("second write of id %s: %v, want a duplicate key error", e.ID, err)
		}
		var ve *sdk.ValidationError
		if errors.As(err, &ve) {
			t.Errorf("a database error reported as a validation error: %v", err)
		}
	})
}

func TestNewEventAndParseSchemaVersion(t *testing.T) {
	t.Parallel()
	e, err := sdk.NewEvent("order", "7", orderCreated{Total: 3})
	if err != nil {
		t.Fatal(err)
	}
	if e.EventType != "order.created" || e.SchemaVersion != "2.1" || string(e.Payload) != `{"total":3}` || e.AggregateID != "7" {
		t.Errorf("NewEvent = %+v", e)
	}
	if maj, min, err := sdk.ParseSchemaVersion("12.304"); err != nil || maj != 12 || min != 304 {
		t.Errorf("ParseSchemaVersion(12.304) = %d, %d, %v", maj, min, err)
	}
	for _, bad := range []string{"", ".", "1.", ".1", "1.0.0", "a.b", "1.01", "+1.0", "1234567890.0"} {
		if _, _, err := sdk.ParseSchemaVersion(bad); err == nil {
			t.Errorf("ParseSchemaVersion(%q) accepted", bad)
		}
	}
}

type orderCreated struct {
	Total int `json:"total"`
}

func (orderCreated) EventType() string     { return "order.created" }
func (orderCreated) SchemaVersion() string { return "2.1" }

// Write must work with the other pgx handles that have Exec too.
func TestWriteOnConn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.ob.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return b.w.WriteBatch(ctx, tx, odd(3))
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.stored(t)); n != 3 {
		t.Fatalf("%d rows, want 3", n)
	}
}
