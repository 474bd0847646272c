package outboxcli

import (
	"context"
	"strings"
	"testing"

	"github.com/outboxrelay/outbox/internal/testutil"
)

// TestEventsTimesOfAnyYear: `outbox events` shows rows whose timestamps are
// ±infinity or outside the years 0000-9999, in the table and in --json
// (json.Marshal fails on such a time.Time), with the lossless text.
func TestEventsTimesOfAnyYear(t *testing.T) {
	t.Parallel()
	f := &fixture{o: testutil.NewOutbox(t)}
	ctx := context.Background()
	for _, r := range [][2]string{
		{"-infinity", "infinity"},
		{"4713-01-01 00:00:00+00 BC", "294276-12-31 23:59:59.999999+00"},
		{"2026-03-01 12:00:00+00", "-infinity"},
		{"infinity", "0001-01-01 00:00:00+00"},
	} {
		if _, err := f.o.Pool.Exec(ctx, `INSERT INTO `+f.o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload, created_at, occurred_at)
			VALUES ('s', '1', 'snap.inf', '{}', $1::timestamptz, $2::timestamptz)`, r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	js := f.mustRun(t, "events", "--aggregate", "s:1", "--json")
	for _, want := range []string{
		`"created_at":"-infinity","occurred_at":"infinity"`,
		`"created_at":"-004712-01-01T00:00:00Z","occurred_at":"+294276-12-31T23:59:59.999999Z"`,
		`"created_at":"2026-03-01T12:00:00Z","occurred_at":"-infinity"`,
		`"created_at":"infinity","occurred_at":"0001-01-01T00:00:00Z"`,
	} {
		if !strings.Contains(js, want) {
			t.Errorf("--json lacks %s:\n%s", want, js)
		}
	}
	// One at a time: --after crosses the infinite created_at values.
	table := f.mustRun(t, "events", "--aggregate", "s:1", "--limit", "1")
	var created []string
	for range 4 {
		lines := strings.Split(strings.TrimSpace(table), "\n")
		if len(lines) < 2 {
			t.Fatalf("table:\n%s", table)
		}
		created = append(created, strings.Fields(lines[1])[1])
		last := lines[len(lines)-1]
		i := strings.Index(last, "--after ")
		if i < 0 {
			break
		}
		after := strings.TrimSuffix(last[i+len("--after "):], ")")
		table = f.mustRun(t, "events", "--aggregate", "s:1", "--limit", "1", "--after", after)
	}
	if got := strings.Join(created, " "); got != "-infinity -004712-01-01T00:00:00Z 2026-03-01T12:00:00.000Z infinity" {
		t.Errorf("created_at column, page by page: %s", got)
	}
}
