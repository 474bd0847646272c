package relay

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/internal/testutil"
)

// unstorableDelivery is a dead letter with a NUL and invalid UTF-8 in every
// text the dead-letter row stores, and a non-ASCII character.
func unstorableDelivery() *delivery {
	ev := &Event{ID: uuid.Must(uuid.NewV7()), AggregateType: "a\x00", AggregateID: "id\xff", EventType: "bad.\x00", SchemaVersion: "1.0",
		Payload: []byte("\x00\xff\xfe payload"), ContentType: "text/plain\x00", TenantID: "t\xfe",
		Headers:    map[string]string{"k": "v\x00w", "bad\xff": "x\xfe", "ok": "é €", "nul\x00key": "y"},
		OccurredAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), CreatedAt: time.Date(2026, 3, 1, 12, 0, 1, 0, time.UTC)}
	long := strings.Repeat("é", 50_000)
	return &delivery{
		msg:   Message{Event: ev, Route: "r", Destination: "dest\x00\xff", Attempt: 3},
		route: &route{Name: "r", Sink: "s"},
		first: time.Date(2026, 3, 1, 12, 0, 2, 0, time.UTC),
		errs:  []string{"2026-03-01T12:00:02Z first \x00", "2026-03-01T12:00:03Z second \xff€ " + long},
		err:   errors.New("handler: bad byte \x00 in \xff\xfe € " + long),
	}
}

// TestDeadLetterStoresUnstorableText: the dead-letter INSERT of a delivery
// whose texts hold a NUL or invalid UTF-8 (class 22 errors from PostgreSQL)
// succeeds at once, with those bytes escaped; the payload is kept exactly.
func TestDeadLetterStoresUnstorableText(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	checkStored(t, o, false)
}

// TestDeadLetterInLatin1Database: in a database whose encoding cannot hold a
// character (LATIN1 and the euro sign, with client_encoding UTF8: SQLSTATE
// 22P05), the dead letter is stored with every text escaped to ASCII instead
// of being retried forever.
func TestDeadLetterInLatin1Database(t *testing.T) {
	t.Parallel()
	dsn := testutil.DatabaseURL(t)
	ctx := context.Background()
	name := testutil.RandomName("latin1_")
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"); err != nil {
		admin.Close(ctx)
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the outbox's own cleanup, which closes its pool
		if _, err := admin.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		admin.Close(context.Background())
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	// pgx leaves client_encoding at the database's: without this, UTF-8
	// bytes would pass through unconverted and never be refused.
	q := u.Query()
	q.Set("client_encoding", "UTF8")
	u.RawQuery = q.Encode()
	o := testutil.NewOutboxAt(t, u.String())
	var enc string
	if err := o.Pool.QueryRow(ctx, "SHOW server_encoding").Scan(&enc); err != nil || enc != "LATIN1" {
		t.Fatalf("server_encoding %q (%v), want LATIN1", enc, err)
	}
	checkStored(t, o, true)
}

func checkStored(t *testing.T, o *testutil.Outbox, ascii bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := newDeadLetterWriter(o.Pool, o.Schema, slog.New(slog.DiscardHandler))
	dl := unstorableDelivery()
	if err := w.write(ctx, dl); err != nil {
		t.Fatalf("dead letter not written: %v", err)
	}
	var aggType, aggID, eventType, contentType, tenant, dest, lastError, headers, errs string
	var payload []byte
	err := o.Pool.QueryRow(ctx, `SELECT aggregate_type, aggregate_id, event_type, content_type, tenant_id, destination, last_error,
	    headers::text, errors::text, payload FROM `+o.Schema+`.dead_letters WHERE event_id = $1`, dl.msg.Event.ID).
		Scan(&aggType, &aggID, &eventType, &contentType, &tenant, &dest, &lastError, &headers, &errs, &payload)
	if err != nil {
		t.Fatal(err)
	}
	euro := "€"
	if ascii {
		euro = `\u20ac`
	}
	for got, want := range map[string]string{aggType: `a\x00`, aggID: `id\xff`, eventType: `bad.\x00`, contentType: `text/plain\x00`,
		tenant: `t\xfe`, dest: `dest\x00\xff`} {
		if got != want {
			t.Errorf("stored %q, want %q", got, want)
		}
	}
	if string(payload) != "\x00\xff\xfe payload" {
		t.Errorf("payload %q, want the exact bytes", payload)
	}
	if !strings.HasPrefix(lastError, `handler: bad byte \x00 in \xff\xfe `+euro) || !strings.Contains(lastError, "bytes cut") || len(lastError) > 10_000 {
		t.Errorf("last_error %.80q... (%d bytes): want it escaped and cut with a marker", lastError, len(lastError))
	}
	var h map[string]string
	if err := json.Unmarshal([]byte(headers), &h); err != nil {
		t.Fatal(err)
	}
	wantH := map[string]string{"k": `v\x00w`, `bad\xff`: `x\xfe`, "ok": "é " + euro, `nul\x00key`: "y"}
	if ascii {
		wantH["ok"] = `\u00e9 \u20ac`
	}
	for k, v := range wantH {
		if h[k] != v {
			t.Errorf("header %q = %q, want %q (all: %q)", k, h[k], v, h)
		}
	}
	var list []string
	if err := json.Unmarshal([]byte(errs), &list); err != nil || len(list) != 2 {
		t.Fatalf("errors %.200s: %v", errs, err)
	}
	if list[0] != `2026-03-01T12:00:02Z first \x00` || !strings.HasPrefix(list[1], `2026-03-01T12:00:03Z second \xff`+euro) ||
		!strings.Contains(list[1], "bytes cut") || !utf8.ValidString(list[1]) {
		t.Errorf("errors %.300q", list)
	}
}
