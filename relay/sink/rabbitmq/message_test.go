package rabbitmq

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/relay/sink/sinktest"
)

// TestPublishingTimes: the AMQP timestamp is occurred_at when it has one;
// for 'infinity' it is absent (amqp091 leaves out a zero time) and
// cloudEvents_occurredat carries the value, without cloudEvents_time.
func TestPublishingTimes(t *testing.T) {
	far := time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC)
	for _, c := range []struct {
		at        time.Time
		inf       pgtype.InfinityModifier
		timestamp time.Time
		prop      string
		value     string
	}{
		{time.Date(2026, 3, 1, 12, 0, 0, 5e8, time.UTC), 0, time.Date(2026, 3, 1, 12, 0, 0, 5e8, time.UTC), "cloudEvents_time", "2026-03-01T12:00:00.5Z"},
		{far, 0, far, "cloudEvents_occurredat", "+294276-12-31T23:59:59.999999Z"},
		{time.Time{}, pgtype.Infinity, time.Time{}, "cloudEvents_occurredat", "infinity"},
		{time.Time{}, pgtype.NegativeInfinity, time.Time{}, "cloudEvents_occurredat", "-infinity"},
	} {
		m := sinktest.NewMessage("x/y", "k", 0)
		m.Event.OccurredAt, m.Event.OccurredAtInf = c.at, c.inf
		p := publishing(m)
		if !p.Timestamp.Equal(c.timestamp) {
			t.Errorf("%s: timestamp %v, want %v", c.value, p.Timestamp, c.timestamp)
		}
		if v := p.Headers[c.prop]; v != c.value {
			t.Errorf("%s: %s = %v", c.value, c.prop, v)
		}
		other := map[string]string{"cloudEvents_time": "cloudEvents_occurredat", "cloudEvents_occurredat": "cloudEvents_time"}[c.prop]
		if v, ok := p.Headers[other]; ok {
			t.Errorf("%s: %s = %v present too", c.value, other, v)
		}
	}
}
