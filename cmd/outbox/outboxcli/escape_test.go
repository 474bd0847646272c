package outboxcli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestShowEscapesControls: what a dead letter carries (header values, error
// texts, a payload, even its envelope) reaches the terminal with control
// characters escaped: a header value or broker error cannot move the cursor,
// clear the screen, overwrite a line with CR or fake a line of the output.
func TestShowEscapesControls(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	// Text payload with CR, ESC-free (ESC would make it a hex dump); JSON
	// payload with raw C1 and bidi characters inside a string.
	_, err := f.o.Pool.Exec(ctx, `INSERT INTO `+f.o.Schema+`.dead_letters
	  (id, event_id, aggregate_type, aggregate_id, event_type, schema_version, payload, content_type, headers, tenant_id,
	   occurred_at, created_at, route, sink, destination, attempts, last_error, errors, first_failed_at, last_failed_at)
	  OVERRIDING SYSTEM VALUE VALUES
	  (6, '0190aaaa-0000-7000-8000-000000000006', 'order', E'o-6\r\x1b[2K', E'order.created\x1b[31m', '1.0',
	   convert_to(E'line one\r\nline two\rOVERWRITE\tend', 'UTF8'), 'text/plain',
	   '{"x-injected": "v\r\nLast error:\r\n  all good\u001b[0m", "x-bell": "\u0007ding", "x-rtl": "abc\u202edcba"}', NULL,
	   '2026-03-01T12:10:00Z', '2026-03-01T12:10:00Z', 'orders', 'bus', E'dest\x1b]0;title\x07', 2,
	   E'broker said: \x1b[2J\x1b[H\rfake prompt $ \u009b31m',
	   '["2026-03-01T12:10:00Z first\nsecond line\r\u0085third", "2026-03-01T12:10:01Z \u001b[1mbold"]',
	   '2026-03-01T12:10:00Z', '2026-03-01T12:10:01Z'),
	  (7, '0190aaaa-0000-7000-8000-000000000007', 'order', 'o-7', 'order.created', '1.0',
	   convert_to(E'{"note": "a\u009bb\u202ec\u2028d"}', 'UTF8'), 'application/json', '{}', NULL,
	   '2026-03-01T12:11:00Z', '2026-03-01T12:11:00Z', 'orders', 'bus', 'd', 1, 'x', '[]',
	   '2026-03-01T12:11:00Z', '2026-03-01T12:11:00Z')`)
	if err != nil {
		t.Fatal(err)
	}
	show := f.mustRun(t, "dlq", "show", "6")
	golden(t, "dlq_show_escaped.txt", show)
	json := f.mustRun(t, "dlq", "show", "7")
	golden(t, "dlq_show_escaped_json.txt", json)
	list := f.mustRun(t, "dlq", "list", "--id", "6,7")
	golden(t, "dlq_list_escaped.txt", list)
	for name, out := range map[string]string{"show 6": show, "show 7": json, "list": list} {
		if i := strings.IndexFunc(out, func(r rune) bool {
			return r != '\n' && (r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e' || r == '\u2028')
		}); i >= 0 {
			t.Errorf("dlq %s prints a control character %q at %d:\n%q", name, out[i:i+1], i, out)
		}
	}
	// --json keeps the exact values (escaped as JSON).
	j := f.mustRun(t, "dlq", "show", "6", "--json")
	if !strings.Contains(j, `"x-injected":"v\r\nLast error:\r\n  all good\u001b[0m"`) {
		t.Errorf("dlq show --json changed the header value:\n%s", j)
	}
}

// TestEventsPreviewEscapes: `outbox events` shows payload previews of rows
// anyone could insert; a terminal escape or a carriage return in one must be
// shown, not obeyed.
func TestEventsPreviewEscapes(t *testing.T) {
	for _, v := range []eventView{
		{Payload: json.RawMessage("\"\x1b]0;owned\x07\\r\"")},
		{PayloadBase64: []byte("plain text\x1b[2J with an escape"), ContentType: "text/plain"},
	} {
		got := payloadPreview(v)
		if strings.ContainsAny(got, "\x1b\x07\r") {
			t.Errorf("payloadPreview(%q) = %q: control characters reach the terminal", v.Payload, got)
		}
	}
}
