package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/sinktest"
	"github.com/outboxrelay/outbox/sdk"
)

// TestMissingTopicIsRetried: a topic that does not exist (auto-creation off)
// is a transient error with a clear message, as for Kafka's own producers:
// the sink reports it (Ping fails naming the topic, one warning), and
// creating the topic is all it takes for delivery to resume.
func TestMissingTopicIsRetried(t *testing.T) {
	t.Parallel()
	topic := testutil.RandomName("outbox-late-")
	logger, logs := sinktest.NewLogs("late")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, Config{Brokers: brokers(t)}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	msgs := sinktest.Batch(topic, sinktest.Keys("late", 3), 0)
	for range 2 { // a second round finds it missing again
		errs := s.Publish(ctx, msgs)
		if len(errs) != len(msgs) {
			t.Fatalf("Publish = %v, want one error per message", errs)
		}
		for _, err := range errs {
			var ute *UnknownTopicError
			if sink.Permanent(err) || !errors.As(err, &ute) || ute.Topic != topic || !errors.Is(err, kafkago.UnknownTopicOrPartition) ||
				!strings.Contains(err.Error(), "create it") {
				t.Fatalf("got %v (permanent=%v), want a transient UnknownTopicError that says to create %s", err, sink.Permanent(err), topic)
			}
		}
	}
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), topic) {
		t.Fatalf("Ping with a topic missing = %v, want an error naming %s", err, topic)
	}
	var warned int
	for _, l := range logs.Lines(t) {
		if l["level"] == "WARN" && l["topic"] == topic && strings.Contains(l["msg"].(string), "does not exist") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("%d warnings naming topic %s, want 1 (not one per Publish): %v", warned, topic, logs.Lines(t))
	}

	createTopic(t, brokers(t), topic, nil)
	sinktest.Publish(t, s, msgs)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after the topic was created: %v", err)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	if got := consume(cctx, t, topic, len(msgs)); len(got) != len(msgs) {
		t.Fatalf("consumed %d, want %d", len(got), len(msgs))
	}
	logs.Check(t, "late", "kafka")
}

// TestMissingTopicThroughTheRelay: events for a topic that does not exist
// yet are retried by the relay under the route's budget, not dead-lettered;
// once the topic is created they are delivered in order, and nothing is
// dead-lettered.
func TestMissingTopicThroughTheRelay(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	topic := testutil.RandomName("outbox-late-")
	ctx := context.Background()
	s := newSink(t, Config{})

	w, err := sdk.New(&sdk.Config{Schema: o.Schema})
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"a", "b", "c", "d"}
	order := map[string][]string{}
	for round := range 5 {
		events := make([]sdk.Event, len(keys))
		for i, k := range keys {
			events[i] = sdk.Event{AggregateType: "order", AggregateID: k, EventType: "order.updated", Payload: fmt.Appendf(nil, `{"round":%d}`, round)}
		}
		if err := pgx.BeginFunc(ctx, o.Pool, func(tx pgx.Tx) error { return w.WriteBatch(ctx, tx, events) }); err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			order[e.AggregateType+":"+e.AggregateID] = append(order[e.AggregateType+":"+e.AggregateID], e.ID.String())
		}
	}

	reg := prometheus.NewRegistry()
	retry := relay.RetryConfig{MaxAttempts: 1_000_000, InitialInterval: relay.Duration(10 * time.Millisecond),
		MaxInterval: relay.Duration(100 * time.Millisecond), MaxElapsed: relay.Duration(10 * time.Minute)}
	cfg, err := relay.NewConfig(relay.Config{
		Database: relay.DatabaseConfig{URL: o.DatabaseURL, Schema: o.Schema, Slot: o.Slot, Publication: o.Publication},
		Delivery: relay.DeliveryConfig{MarkInterval: relay.Duration(10 * time.Millisecond)},
		Routes:   []relay.RouteConfig{{Name: "late", Match: "*", Sink: "late", Destination: topic, Retry: retry}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(cfg, map[string]sink.Sink{"late": s}, &relay.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg, DrainTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
		s.Close()
	}()

	count := func(q string) int {
		var n int
		if err := o.Pool.QueryRow(ctx, "SELECT count(*) FROM "+o.Schema+"."+q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	retried := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var n float64
		for _, mf := range mfs {
			if mf.GetName() == "outbox_events_retried_total" {
				for _, m := range mf.GetMetric() {
					n += m.GetCounter().GetValue()
				}
			}
		}
		return n
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Every key retried a few times, or (the defect) dead-lettered.
	waitFor("retries or dead letters", func() bool { return retried() >= 3*float64(len(keys)) || count("dead_letters") > 0 })
	if n := count("dead_letters"); n > 0 {
		t.Fatalf("%d events dead-lettered for a topic that does not exist yet, want them retried", n)
	}
	if n := count("events WHERE delivered_at IS NULL"); n != 20 {
		t.Fatalf("%d events undelivered before the topic exists, want 20", n)
	}

	createTopic(t, brokers(t), topic, nil)
	waitFor("delivery after the topic was created", func() bool { return count("events WHERE delivered_at IS NULL") == 0 })
	if n := count("dead_letters"); n > 0 {
		t.Fatalf("%d events dead-lettered", n)
	}
	cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
	defer ccancel()
	got := consume(cctx, t, topic, 20)
	perKey := map[string][]string{}
	for _, r := range got {
		perKey[r.Key] = append(perKey[r.Key], r.ID)
	}
	for key, ids := range order {
		if !slices.Equal(perKey[key], ids) {
			b, _ := json.Marshal(perKey[key])
			t.Errorf("key %s: received %s, want the commit order %v", key, b, ids)
		}
	}
}
