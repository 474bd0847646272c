package relay_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/inbox"
	"github.com/outboxrelay/outbox/sdk/wire"
)

func sampleEvent() *relay.Event {
	return &relay.Event{
		ID:            uuid.MustParse("0190a6e4-7c2a-7b3e-9f00-000000000001"),
		AggregateType: "order",
		AggregateID:   "o-42",
		EventType:     "order.placed",
		SchemaVersion: "2.1",
		Payload:       []byte(`{"total":250}`),
		ContentType:   "application/json; charset=utf-8",
		Headers: map[string]string{
			"traceparent":  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			"tracestate":   "vendor=abc",
			"x-request-id": "r-1",
		},
		TenantID:   "acme",
		OccurredAt: time.Date(2026, 3, 1, 12, 30, 0, 123456000, time.UTC),
	}
}

// want is the envelope every adapter must produce for sampleEvent.
func want(e *relay.Event) inbox.Envelope {
	return inbox.Envelope{
		Event: sdk.Event{
			ID: e.ID, AggregateType: e.AggregateType, AggregateID: e.AggregateID, EventType: e.EventType,
			SchemaVersion: e.SchemaVersion, Payload: e.Payload, ContentType: e.ContentType,
			Headers: e.Headers, TenantID: e.TenantID, OccurredAt: e.OccurredAt,
		},
		Source:      "/outbox/test",
		SpecVersion: "1.0",
	}
}

func attrs(e *relay.Event) []sink.Attribute {
	return sink.CloudEvents(&relay.Message{Event: e, Source: "/outbox/test"})
}

// kafkaMessage is one delivery in Kafka's CloudEvents binary form, made from
// the relay's own attribute list so the adapter and the relay agree.
func kafkaMessage(e *relay.Event) ([]inbox.KafkaHeader, []byte) {
	var hs []inbox.KafkaHeader
	for _, a := range attrs(e) {
		hs = append(hs, inbox.KafkaHeader{Key: wire.KafkaHeader(a.Name), Value: []byte(a.Value)})
	}
	hs = append(hs, inbox.KafkaHeader{Key: "content-type", Value: []byte(e.ContentType)})
	for k, v := range e.Headers {
		hs = append(hs, inbox.KafkaHeader{Key: k, Value: []byte(v)})
	}
	return hs, e.Payload
}

// Each adapter reads back what a sink of that binding writes, built here from
// sink.CloudEvents and sdk/wire. The sinks' contract suites
// (relay/sink/sinktest) read what the real sinks write through the real
// brokers with these adapters.
func TestAdaptersReadTheRelaysMessages(t *testing.T) {
	t.Parallel()
	e := sampleEvent()
	cases := map[string]func() (inbox.Envelope, error){
		"kafka": func() (inbox.Envelope, error) {
			h, v := kafkaMessage(e)
			return inbox.FromKafka(h, v)
		},
		"nats": func() (inbox.Envelope, error) {
			h := map[string][]string{"content-type": {e.ContentType}, "Nats-Msg-Id": {e.ID.String()}, "Nats-Expected-Stream": {"EVENTS"}}
			for _, a := range attrs(e) {
				h[wire.NATSHeader(a.Name)] = []string{wire.NATSEncode(a.Value)}
			}
			h[wire.NATSHeader(wire.AttrDataContentType)] = []string{wire.NATSEncode(e.ContentType)}
			for k, v := range e.Headers {
				h[k] = []string{v}
			}
			return inbox.FromNATS(h, e.Payload)
		},
		"nats, plain Content-Type only": func() (inbox.Envelope, error) {
			h := map[string][]string{"Content-Type": {e.ContentType}}
			for _, a := range attrs(e) {
				h[wire.NATSHeader(a.Name)] = []string{wire.NATSEncode(a.Value)}
			}
			for k, v := range e.Headers {
				h[k] = []string{v}
			}
			return inbox.FromNATS(h, e.Payload)
		},
		"amqp underscore": func() (inbox.Envelope, error) {
			m := inbox.AMQPMessage{Headers: map[string]any{}, ContentType: e.ContentType, MessageID: e.ID.String(), Body: e.Payload}
			for _, a := range attrs(e) {
				m.Headers[wire.AMQPProperty(a.Name)] = a.Value
			}
			for k, v := range e.Headers {
				m.Headers[k] = v
			}
			return inbox.FromAMQP(m)
		},
		"amqp colon, native time": func() (inbox.Envelope, error) {
			m := inbox.AMQPMessage{Headers: map[string]any{}, ContentType: e.ContentType, Body: e.Payload}
			for _, a := range attrs(e) {
				m.Headers["cloudEvents:"+a.Name] = a.Value
			}
			m.Headers["cloudEvents:time"] = e.OccurredAt // an AMQP timestamp
			for k, v := range e.Headers {
				m.Headers[k] = []byte(v)
			}
			return inbox.FromAMQP(m)
		},
		"redis": func() (inbox.Envelope, error) {
			v := map[string]any{"payload": string(e.Payload), "datacontenttype": e.ContentType,
				"headers": string(wire.RedisEncodeHeaders(e.Headers))}
			for _, a := range attrs(e) {
				v[a.Name] = a.Value
			}
			return inbox.FromRedis(v)
		},
	}
	for name, read := range cases {
		got, err := read()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		w := want(e)
		if !got.OccurredAt.Equal(w.OccurredAt) {
			t.Errorf("%s: time %v, want %v", name, got.OccurredAt, w.OccurredAt)
		}
		got.OccurredAt, w.OccurredAt = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, w)
		}
	}
}

func TestTraceContext(t *testing.T) {
	t.Parallel()
	h, v := kafkaMessage(sampleEvent())
	env, err := inbox.FromKafka(h, v)
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.SpanContextFromContext(env.TraceContext(context.Background()))
	if !sc.IsRemote() || sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() != "00f067aa0ba902b7" || sc.TraceState().Get("vendor") != "abc" {
		t.Fatalf("span context %+v", sc)
	}
	// The CloudEvents distributed-tracing form (ce_traceparent) works too.
	e := sampleEvent()
	tp := e.Headers["traceparent"]
	e.Headers = nil
	h, v = kafkaMessage(e)
	h = append(h, inbox.KafkaHeader{Key: "ce_traceparent", Value: []byte(tp)})
	env, err = inbox.FromKafka(h, v)
	if err != nil {
		t.Fatal(err)
	}
	if sc := trace.SpanContextFromContext(env.TraceContext(context.Background())); sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("ce_traceparent not extracted: %+v", sc)
	}
	// No trace headers: the context is returned unchanged.
	env.Headers = nil
	if sc := trace.SpanContextFromContext(env.TraceContext(context.Background())); sc.IsValid() {
		t.Fatal("a span context out of nothing")
	}
}

func TestMalformedMessages(t *testing.T) {
	t.Parallel()
	base := func() []inbox.KafkaHeader {
		h, _ := kafkaMessage(sampleEvent())
		return h
	}
	without := func(key string) []inbox.KafkaHeader {
		var out []inbox.KafkaHeader
		for _, h := range base() {
			if h.Key != key {
				out = append(out, h)
			}
		}
		return out
	}
	with := func(key, value string) []inbox.KafkaHeader {
		return append(without(key), inbox.KafkaHeader{Key: key, Value: []byte(value)})
	}
	for name, hs := range map[string][]inbox.KafkaHeader{
		"no id":         without("ce_id"),
		"id not a uuid": with("ce_id", "42"),
		"no type":       without("ce_type"),
		"bad time":      with("ce_time", "yesterday"),
		"bad version":   with("ce_schemaversion", "2"),
		"other spec":    with("ce_specversion", "0.3"),
		"no attributes": nil,
		"plain message": {{Key: "content-type", Value: []byte("text/plain")}},
		"empty ce_type": with("ce_type", ""),
		"id garbage":    with("ce_id", "not-a-uuid-either"),
	} {
		_, err := inbox.FromKafka(hs, []byte(`{}`))
		var me *inbox.MessageError
		if !errors.Is(err, inbox.ErrNotAnEvent) || !errors.As(err, &me) {
			t.Errorf("%s: %v, want ErrNotAnEvent", name, err)
		}
	}
	// NATS: Nats-Msg-Id and ce-id must agree; either alone is enough.
	h := map[string][]string{"ce-type": {"t"}, "ce-id": {uuid.NewString()}, "Nats-Msg-Id": {uuid.NewString()}}
	if _, err := inbox.FromNATS(h, nil); !errors.Is(err, inbox.ErrNotAnEvent) {
		t.Errorf("conflicting ids: %v", err)
	}
	delete(h, "ce-id")
	if env, err := inbox.FromNATS(h, nil); err != nil || env.ID.String() != h["Nats-Msg-Id"][0] {
		t.Errorf("id from Nats-Msg-Id: %v, %v", env.ID, err)
	}
	// AMQP: a property value that is no string at all.
	if _, err := inbox.FromAMQP(inbox.AMQPMessage{Headers: map[string]any{"cloudEvents_id": map[string]any{}}}); !errors.Is(err, inbox.ErrNotAnEvent) {
		t.Errorf("AMQP table value: %v", err)
	}
	// Redis: no payload field.
	if _, err := inbox.FromRedis(map[string]any{"id": uuid.NewString(), "type": "t"}); !errors.Is(err, inbox.ErrNotAnEvent) || !strings.Contains(err.Error(), "payload") {
		t.Errorf("Redis without payload: %v", err)
	}
	// Redis: a headers field that is not a JSON object of strings.
	for _, bad := range []string{"traceparent=00-abc", `{"n":1}`} {
		_, err := inbox.FromRedis(map[string]any{"id": uuid.NewString(), "type": "t", "payload": "{}", "headers": bad})
		var me *inbox.MessageError
		if !errors.As(err, &me) || me.Field != "headers" {
			t.Errorf("Redis headers %q: %v, want a MessageError naming the headers field", bad, err)
		}
	}
	// Defaults: no content type means JSON, no schema version means 1.0.
	env, err := inbox.FromRedis(map[string]any{"id": uuid.NewString(), "type": "t", "payload": []byte("{}")})
	if err != nil || env.ContentType != "application/json" || env.SchemaVersion != "1.0" {
		t.Errorf("defaults: %+v, %v", env, err)
	}
}
