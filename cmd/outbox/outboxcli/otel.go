package outboxcli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// tracerProvider configures OpenTelemetry tracing from the standard OTEL_*
// variables: on when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set or OTEL_TRACES_EXPORTER=otlp; off
// when none is set, or with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
// The exporter speaks OTLP over HTTP (protobuf); the exporter reads the
// endpoint, headers, TLS and timeout variables itself. It returns nil when
// tracing is off.
func tracerProvider(ctx context.Context, logger *slog.Logger) (trace.TracerProvider, func(context.Context) error, error) {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") || os.Getenv("OTEL_TRACES_EXPORTER") == "none" {
		return nil, nil, nil
	}
	on := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" ||
		os.Getenv("OTEL_TRACES_EXPORTER") == "otlp"
	if !on {
		return nil, nil, nil
	}
	if p := os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		logger.Warn("only OTLP over HTTP is built in; using http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL", p)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("OpenTelemetry exporter: %w", err)
	}
	if os.Getenv("OTEL_SERVICE_NAME") == "" {
		os.Setenv("OTEL_SERVICE_NAME", "outbox-relay")
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil {
		return nil, nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	otel.SetErrorHandler(&otelErrorLog{logger: logger})
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	logger.Info("tracing on: exporting spans over OTLP/HTTP")
	return tp, tp.Shutdown, nil
}

// otelErrorLog sends OpenTelemetry's errors (a collector that cannot be
// reached, say) to the relay's logger instead of the standard library's log
// package, so that every line stays JSON. An export fails every few seconds
// while the collector is away: a changed error is logged at once, the same
// one at most once a minute, with the number left out.
type otelErrorLog struct {
	logger *slog.Logger

	mu       sync.Mutex
	last     string
	lastAt   time.Time
	repeated int
}

func (h *otelErrorLog) Handle(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	msg := err.Error()
	if msg == h.last && time.Since(h.lastAt) < time.Minute {
		h.repeated++
		return
	}
	h.logger.Warn("tracing: exporting spans failed; spans are dropped until the collector answers", "error", msg, "repeated", h.repeated)
	h.last, h.lastAt, h.repeated = msg, time.Now(), 0
}
