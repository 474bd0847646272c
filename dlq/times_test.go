package dlq_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/outboxrelay/outbox/dlq"
)

// TestEnvelopeTimesOfAnyYear: a dead letter's copy of occurred_at and
// created_at may be 'infinity' or a year JSON's time.Time cannot write; List,
// Get and their JSON keep them exactly.
func TestEnvelopeTimesOfAnyYear(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	cases := []struct{ occurred, created, occurredText, createdText string }{
		{"infinity", "-infinity", "infinity", "-infinity"},
		{"294276-12-31 23:59:59.999999+00", "4713-01-01 00:00:00+00 BC", "+294276-12-31T23:59:59.999999Z", "-004712-01-01T00:00:00Z"},
		{"0001-01-01 00:00:00+00", "2026-03-01 12:00:00.5+00", "0001-01-01T00:00:00Z", "2026-03-01T12:00:00.5Z"},
	}
	for i, c := range cases {
		if _, err := b.o.Pool.Exec(ctx, `INSERT INTO `+b.o.Schema+`.dead_letters (id, event_id, aggregate_type, aggregate_id, event_type,
			schema_version, payload, content_type, occurred_at, created_at, route, sink, destination, attempts, last_error,
			first_failed_at, last_failed_at) OVERRIDING SYSTEM VALUE
			VALUES ($1, $2, 'k', '1', 'e', '1.0', '\x7b7d', 'application/json', $3::timestamptz, $4::timestamptz, 'r', 's', 'd', 1, 'boom', now(), now())`,
			i+1, uuid.Must(uuid.NewV7()), c.occurred, c.created); err != nil {
			t.Fatal(err)
		}
	}
	list, err := b.store.List(ctx, dlq.Filter{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != len(cases) {
		t.Fatalf("List: %d letters, want %d", len(list), len(cases))
	}
	js, err := json.Marshal(list)
	if err != nil {
		t.Fatalf("List's letters as JSON: %v", err)
	}
	for i, c := range cases {
		l, err := b.store.Get(ctx, int64(i+1))
		if err != nil {
			t.Fatalf("Get %d: %v", i+1, err)
		}
		for _, got := range []dlq.Letter{list[i], *l} {
			if got.OccurredAt.String() != c.occurredText || got.CreatedAt.String() != c.createdText {
				t.Errorf("letter %d: occurred_at %s, created_at %s; want %s, %s", i+1, got.OccurredAt, got.CreatedAt, c.occurredText, c.createdText)
			}
		}
		if want := `"occurred_at":"` + c.occurredText + `","created_at":"` + c.createdText + `"`; !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s:\n%s", want, js)
		}
	}
	// And back.
	var again []dlq.Letter
	if err := json.Unmarshal(js, &again); err != nil {
		t.Fatal(err)
	}
	for i := range again {
		if again[i].OccurredAt != list[i].OccurredAt || again[i].CreatedAt != list[i].CreatedAt {
			t.Errorf("letter %d: JSON round trip gave %v %v, want %v %v", i+1, again[i].OccurredAt, again[i].CreatedAt, list[i].OccurredAt, list[i].CreatedAt)
		}
	}
}
