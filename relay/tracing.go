package relay

import (
	"context"
	"maps"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxrelay/outbox/relay/sink"
)

// tracing starts one producer span per delivery attempt, as a child of the
// trace context the SDK stored in the event's headers, and sends the span's
// context with the message, so a consumer continues the same trace.
type tracing struct {
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator
	systems map[string]string // sink name -> messaging.system
}

func newTracing(tp trace.TracerProvider, prop propagation.TextMapPropagator, cfg *Config) *tracing {
	if tp == nil {
		return nil
	}
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	t := &tracing{tracer: tp.Tracer("github.com/outboxrelay/outbox/relay"), prop: prop, systems: map[string]string{}}
	for _, s := range cfg.Sinks {
		t.systems[s.Name] = s.Type
	}
	return t
}

// start begins the span of one attempt and sets m.Headers to the event's
// headers with the span's trace context.
func (t *tracing) start(m *Message, sink string) trace.Span {
	ctx := t.prop.Extract(context.Background(), propagation.MapCarrier(m.Event.Headers))
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(t.systems[sink]),
		semconv.MessagingDestinationName(m.Destination),
		semconv.MessagingOperationName("send"),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingMessageID(m.Event.ID.String()),
		attribute.String("outbox.route", m.Route),
		attribute.String("outbox.event_type", m.Event.EventType),
		attribute.Int("outbox.attempt", m.Attempt),
	}
	ctx, span := t.tracer.Start(ctx, "send "+m.Destination, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	h := make(map[string]string, len(m.Event.Headers)+2)
	maps.Copy(h, m.Event.Headers)
	t.prop.Inject(ctx, propagation.MapCarrier(h))
	m.Headers = h
	return span
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		if sink.Permanent(err) {
			span.SetAttributes(attribute.Bool("outbox.permanent_error", true))
		}
	}
	span.End()
}
