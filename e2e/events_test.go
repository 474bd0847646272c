package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/sdk"
)

// eventsOutput is `outbox events --json`.
type eventsOutput struct {
	AggregateType string `json:"aggregate_type"`
	AggregateID   string `json:"aggregate_id"`
	Events        []struct {
		ID            string            `json:"id"`
		CreatedAt     time.Time         `json:"created_at"`
		EventType     string            `json:"event_type"`
		SchemaVersion string            `json:"schema_version"`
		DeliveredAt   *time.Time        `json:"delivered_at"`
		ContentType   string            `json:"content_type"`
		Headers       map[string]string `json:"headers"`
		Payload       json.RawMessage   `json:"payload"`
		PayloadBase64 []byte            `json:"payload_base64"`
	} `json:"events"`
	Next string `json:"next"`
}

// writeHistory commits the events of order o-1 (in several transactions, one
// of them a batch, interleaved with another order's) and returns their ids in
// commit order and the ids marked delivered.
func writeHistory(t *testing.T, o *testutil.Outbox) (ids []string, delivered map[string]bool) {
	t.Helper()
	ctx := context.Background()
	w, err := sdk.New(&sdk.Config{Schema: o.Schema})
	if err != nil {
		t.Fatal(err)
	}
	ev := func(id, typ, version string, payload string) sdk.Event {
		return sdk.Event{AggregateType: "order", AggregateID: id, EventType: typ, SchemaVersion: version, Payload: []byte(payload)}
	}
	txs := [][]sdk.Event{
		{ev("o-1", "order.placed", "1.0", `{"total": 100, "note": "a long note that the table's payload preview has to cut short"}`), ev("o-2", "order.placed", "1.0", `{"total": 5}`)},
		{ev("o-1", "order.item_added", "1.1", `{"sku": "a"}`), ev("o-1", "order.item_added", "1.1", `{"sku": "b"}`)},
		{ev("o-2", "order.paid", "1.0", `{}`)},
		{ev("o-1", "order.paid", "2.0", `{"cents": 10000}`)},
		{{AggregateType: "order", AggregateID: "o-1", EventType: "order.label", Payload: []byte{0, 1, 2}, ContentType: "application/octet-stream"}},
		{ev("o-1", "order.shipped", "1.0", `{"carrier": "x"}`)},
	}
	for _, events := range txs {
		err := pgx.BeginFunc(ctx, o.Pool, func(tx pgx.Tx) error { return w.WriteBatch(ctx, tx, events) })
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.AggregateID == "o-1" {
				ids = append(ids, e.ID.String())
			}
		}
	}
	delivered = map[string]bool{ids[0]: true, ids[3]: true}
	if _, err := o.Pool.Exec(ctx, "UPDATE "+o.Schema+".events SET delivered_at = now() WHERE id = ANY($1::uuid[])", []string{ids[0], ids[3]}); err != nil {
		t.Fatal(err)
	}
	return ids, delivered
}

func TestEventsCommand(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ids, delivered := writeHistory(t, o)
	db := []string{"--database-url", o.DatabaseURL, "--schema", o.Schema}
	events := func(args ...string) result {
		t.Helper()
		return run(t, nil, append(append([]string{"events"}, db...), args...)...)
	}
	decode := func(res result) eventsOutput {
		t.Helper()
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		var out eventsOutput
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
			t.Fatalf("decode %q: %v", res.stdout, err)
		}
		return out
	}

	t.Run("json", func(t *testing.T) {
		out := decode(events("--aggregate", "order:o-1", "--json"))
		if out.AggregateType != "order" || out.AggregateID != "o-1" || out.Next != "" {
			t.Errorf("aggregate %s:%s next %q", out.AggregateType, out.AggregateID, out.Next)
		}
		var got []string
		for i, e := range out.Events {
			got = append(got, e.ID)
			if (e.DeliveredAt != nil) != delivered[e.ID] {
				t.Errorf("event %d: delivered_at %v, want delivered %v", i, e.DeliveredAt, delivered[e.ID])
			}
			if i > 0 && e.CreatedAt.Before(out.Events[i-1].CreatedAt) {
				t.Errorf("event %d created before event %d", i, i-1)
			}
		}
		if !slices.Equal(got, ids) {
			t.Fatalf("ids\n%v\nwant (commit order)\n%v", got, ids)
		}
		first, label := out.Events[0], out.Events[4]
		if first.EventType != "order.placed" || first.SchemaVersion != "1.0" || !strings.Contains(string(first.Payload), `"total":100`) {
			t.Errorf("first event: %+v payload %s", first, first.Payload)
		}
		if out.Events[3].SchemaVersion != "2.0" {
			t.Errorf("schema_version of order.paid: %q", out.Events[3].SchemaVersion)
		}
		if label.Payload != nil || string(label.PayloadBase64) != "\x00\x01\x02" || label.ContentType != "application/octet-stream" {
			t.Errorf("binary payload: %+v", label)
		}
	})

	t.Run("pages", func(t *testing.T) {
		var got []string
		after := ""
		for page := 0; ; page++ {
			args := []string{"--aggregate", "order:o-1", "--json", "--limit", "2"}
			if after != "" {
				args = append(args, "--after", after)
			}
			out := decode(events(args...))
			if len(out.Events) > 2 {
				t.Fatalf("page %d has %d events, limit 2", page, len(out.Events))
			}
			for _, e := range out.Events {
				got = append(got, e.ID)
			}
			if out.Next == "" {
				break
			}
			if out.Next != out.Events[len(out.Events)-1].ID {
				t.Fatalf("next %s is not the page's last id", out.Next)
			}
			after = out.Next
			if page > 10 {
				t.Fatal("pagination does not end")
			}
		}
		if !slices.Equal(got, ids) {
			t.Fatalf("paged ids\n%v\nwant\n%v", got, ids)
		}
		// A page exactly as long as what is left has no next.
		if out := decode(events("--aggregate", "order:o-1", "--json", "--limit", "6")); out.Next != "" || len(out.Events) != 6 {
			t.Errorf("--limit 6: %d events, next %q; want 6 and no next", len(out.Events), out.Next)
		}
	})

	t.Run("table", func(t *testing.T) {
		res := events("--aggregate", "order:o-1", "--limit", "5")
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		lines := strings.Split(strings.TrimRight(res.stdout, "\n"), "\n")
		if len(lines) != 7 {
			t.Fatalf("want a header, 5 rows and the next-page line, got:\n%s", res.stdout)
		}
		for _, col := range []string{"ID", "CREATED_AT", "EVENT_TYPE", "VERSION", "DELIVERED_AT", "PAYLOAD"} {
			if !strings.Contains(lines[0], col) {
				t.Errorf("header %q lacks %s", lines[0], col)
			}
		}
		for i, id := range ids[:5] {
			row := lines[i+1]
			if !strings.HasPrefix(row, id) {
				t.Errorf("row %d %q does not start with %s", i, row, id)
			}
			fields := strings.Fields(row)
			if d := fields[4]; (d == "-") == delivered[id] {
				t.Errorf("row %d: delivered_at column %q, want delivered %v", i, d, delivered[id])
			}
		}
		if !strings.Contains(lines[1], `{"total":100,"note":"a long note`) || !strings.HasSuffix(lines[1], "...") {
			t.Errorf("payload preview of row 1: %q", lines[1])
		}
		if !strings.Contains(lines[5], "<3 bytes application/octet-stream>") {
			t.Errorf("binary payload preview: %q", lines[5])
		}
		if !strings.Contains(lines[6], "--after "+ids[4]) {
			t.Errorf("last line %q does not give the next page", lines[6])
		}
		if res := events("--aggregate", "order:nope"); res.code != 0 || !strings.Contains(res.stdout, "no events for order:nope") {
			t.Errorf("unknown aggregate: exit %d stdout %q", res.code, res.stdout)
		}
	})

	t.Run("config", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "relay.yaml")
		body := fmt.Sprintf("database:\n  url: %s\n  schema: %s\nsinks:\n  - name: out\n    type: stdout\nroutes:\n  - name: all\n    match: \"*\"\n    sink: out\n    destination: x\n", o.DatabaseURL, o.Schema)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		out := decode(run(t, nil, "events", "--config", cfg, "--aggregate", "order:o-2", "--json"))
		if len(out.Events) != 2 || out.Events[0].EventType != "order.placed" || out.Events[1].EventType != "order.paid" {
			t.Errorf("o-2 through --config: %+v", out.Events)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want []string
		}{
			{[]string{"--aggregate", "order-o-1"}, []string{"no colon", "hint: write --aggregate TYPE:ID"}},
			{[]string{"--aggregate", ":o-1"}, []string{"type before the colon is empty", "hint:"}},
			{[]string{"--aggregate", "order:"}, []string{"id after the colon is empty", "hint:"}},
			{nil, []string{"--aggregate is required", "hint:"}},
			{[]string{"--aggregate", "order:o-1", "--after", "42"}, []string{"not an event id", "hint:"}},
			{[]string{"--aggregate", "order:o-2", "--after", ids[0]}, []string{"no such event of order:o-2", "hint:"}},
			{[]string{"--aggregate", "order:o-1", "--limit", "-1"}, []string{"must not be negative"}},
			{[]string{"--aggregate", "order:o-1", "extra"}, []string{"unknown command"}},
		} {
			res := events(tc.args...)
			if res.code != 2 {
				t.Errorf("%v: exit %d, want 2; stderr %s", tc.args, res.code, res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("%v: stderr lacks %q:\n%s", tc.args, w, res.stderr)
				}
			}
		}
		res := run(t, nil, "events", "--database-url", o.DatabaseURL, "--schema", "surely_not_migrated", "--aggregate", "order:o-1")
		if res.code != 1 || !strings.Contains(res.stderr, "outbox migrate up --schema surely_not_migrated") {
			t.Errorf("unmigrated schema: exit %d, stderr %s", res.code, res.stderr)
		}
	})
}
