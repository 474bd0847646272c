package stdout

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/sinktest"
)

// shared is the writer every sink of the test writes to.
type shared struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *shared) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *shared) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSpace(s.b.String()), "\n")
}

func TestContract(t *testing.T) {
	out := &shared{}
	sinktest.Run(t, sinktest.Harness{
		New:         func(t *testing.T) sink.Sink { return New(out, Config{}) },
		Destination: func(t *testing.T) string { return testutil.RandomName("d") },
		Consume: func(ctx context.Context, t *testing.T, dest string, min int) []sinktest.Received {
			for {
				var got []sinktest.Received
				for _, line := range out.lines() {
					if line == "" {
						continue
					}
					var l Line
					if err := json.Unmarshal([]byte(line), &l); err != nil {
						t.Fatalf("not a JSON line: %q: %v", line, err)
					}
					if l.Destination != dest {
						continue
					}
					r := sinktest.Received{ID: l.ID, ContentType: l.DataContentType, Headers: l.Headers,
						Attributes: map[string]string{"specversion": l.SpecVersion, "id": l.ID, "source": l.Source, "type": l.Type,
							"subject": l.Subject, "time": l.Time, "aggregatetype": l.AggregateType, "schemaversion": l.SchemaVersion}}
					if l.TenantID != "" {
						r.Attributes["tenantid"] = l.TenantID
					}
					if l.Time == "" {
						delete(r.Attributes, "time")
					}
					if l.OccurredAt != "" {
						r.Attributes["occurredat"] = l.OccurredAt
					}
					if r.Headers == nil {
						r.Headers = map[string]string{}
					}
					if l.Data != nil {
						r.Payload = l.Data
					} else {
						r.Payload = l.DataBase64
					}
					got = append(got, r)
				}
				if len(got) >= min || ctx.Err() != nil {
					return got
				}
				time.Sleep(10 * time.Millisecond)
			}
		},
	})
}

func TestLineFormat(t *testing.T) {
	var b bytes.Buffer
	s := New(&b, Config{})
	m := sinktest.NewMessage("dest", "k:1", 1)
	m.Event.Payload = []byte{0xff, 0x00}
	m.Event.ContentType = "application/octet-stream"
	if errs := s.Publish(context.Background(), []*sink.Message{m}); errs != nil {
		t.Fatal(errs)
	}
	sc := bufio.NewScanner(&b)
	if !sc.Scan() {
		t.Fatal("no line")
	}
	var l map[string]any
	if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
		t.Fatal(err)
	}
	if l["data_base64"] != base64.StdEncoding.EncodeToString([]byte{0xff, 0x00}) || l["data"] != nil {
		t.Errorf("binary payload: %v", l)
	}
	s.Close()
	if errs := s.Publish(context.Background(), []*sink.Message{m}); errs == nil || sink.Permanent(errs[0]) {
		t.Errorf("publish after close: %v, want a transient error", errs)
	}
}

// TestLineTimes: occurred_at is "time" when RFC 3339 holds it, else
// "occurredat" (and no "time"); every value encodes (json.Marshal fails on
// a time.Time outside the years 0000-9999).
func TestLineTimes(t *testing.T) {
	for _, c := range []struct {
		at   time.Time
		inf  pgtype.InfinityModifier
		want string
	}{
		{time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("X", 3600)), 0, `"time":"2026-03-01T11:00:00Z"`},
		{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), 0, `"time":"0001-01-01T00:00:00Z"`},
		{time.Date(-4712, 1, 1, 0, 0, 0, 0, time.UTC), 0, `"occurredat":"-004712-01-01T00:00:00Z"`},
		{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), 0, `"occurredat":"+010000-01-01T00:00:00Z"`},
		{time.Time{}, pgtype.Infinity, `"occurredat":"infinity"`},
		{time.Time{}, pgtype.NegativeInfinity, `"occurredat":"-infinity"`},
	} {
		m := sinktest.NewMessage("d", "k", 0)
		m.Event.OccurredAt, m.Event.OccurredAtInf = c.at, c.inf
		var b bytes.Buffer
		s := New(&b, Config{})
		if errs := s.Publish(context.Background(), []*sink.Message{m}); errs != nil {
			t.Fatalf("%s: %v", c.want, errs)
		}
		line := b.String()
		if !strings.Contains(line, c.want) {
			t.Errorf("line %s lacks %s", line, c.want)
		}
		if strings.Contains(c.want, "occurredat") && strings.Contains(line, `"time"`) {
			t.Errorf("line %s has a time member too", line)
		}
	}
}
