package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/registry"
)

// sinkTypes are the sink types of `outbox relay`, plus "null".
func sinkTypes() registry.Registry {
	r := registry.Default()
	r["null"] = registry.Type{
		Check: func(sc *relay.SinkConfig) error {
			var c struct{}
			return sc.Decode(&c)
		},
		Build: func(_ context.Context, sc *relay.SinkConfig, _ []*relay.Destination, _ *slog.Logger) (sink.Sink, error) {
			var c struct{}
			if err := sc.Decode(&c); err != nil {
				return nil, err
			}
			return nullSink{}, nil
		},
	}
	return r
}

// nullSink accepts every message at once: the relay's own cost, with no
// broker.
type nullSink struct{}

func (nullSink) Publish(context.Context, []*sink.Message) []error { return nil }
func (nullSink) Close() error                                     { return nil }

// timedSink records, while recording is on, the time from each message's
// commit (pgoutput's commit timestamp) to the broker's acknowledgement
// (Publish returning it as accepted).
type timedSink struct {
	sink.Sink
	rec *recorder
}

func (t *timedSink) Publish(ctx context.Context, msgs []*sink.Message) []error {
	errs := t.Sink.Publish(ctx, msgs)
	if t.rec.recording() {
		now := time.Now()
		ds := make([]time.Duration, 0, len(msgs))
		for i, m := range msgs {
			if (errs == nil || errs[i] == nil) && !m.Event.CommitTime.IsZero() {
				ds = append(ds, now.Sub(m.Event.CommitTime))
			}
		}
		t.rec.add(ds...)
	}
	return errs
}

// RunRelay is the `outbox-bench relay` child: the relay as `outbox relay`
// runs it (same package, same sink constructors, Prometheus registry and
// /metrics), plus the null sink, commit-to-ack recording at /bench/latency,
// and an optional CPU profile. It returns the exit code.
func RunRelay(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("outbox-bench relay", flag.ContinueOnError)
	configPath := fs.String("config", "relay.yaml", "relay.yaml to run")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "outbox-bench relay: %v\n", err)
		return 1
	}
	cfg, err := relay.LoadConfig(*configPath)
	if err != nil {
		return fail(err)
	}
	types := sinkTypes()
	if err := types.Check(cfg, *configPath); err != nil {
		return fail(err)
	}
	level, err := relay.ParseLevel(cfg.Log.Level)
	if err != nil {
		return fail(err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	rec := &recorder{}
	sinks, err := types.Open(ctx, cfg, logger)
	if err != nil {
		return fail(err)
	}
	defer registry.Close(sinks)
	for name, s := range sinks {
		sinks[name] = &timedSink{Sink: s, rec: rec}
	}

	// The relay's own metrics in a registry of their own, so that the
	// benchmark's frequent polls (/bench/metrics) do not pay for the Go and
	// process collectors; /metrics serves everything, as `outbox relay` does.
	relayReg := prometheus.NewRegistry()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r, err := relay.New(cfg, sinks, &relay.Options{Logger: logger, Registerer: relayReg, Version: "bench"})
	if err != nil {
		return fail(err)
	}
	if cfg.Admin.Listen != "off" {
		ln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			return fail(fmt.Errorf("admin.listen: %w", err))
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(prometheus.Gatherers{relayReg, reg}, promhttp.HandlerOpts{}))
		mux.Handle("GET /bench/metrics", promhttp.HandlerFor(relayReg, promhttp.HandlerOpts{}))
		mux.HandleFunc("POST /bench/latency/start", func(w http.ResponseWriter, _ *http.Request) { rec.start() })
		mux.HandleFunc("POST /bench/latency/stop", func(w http.ResponseWriter, _ *http.Request) {
			json.NewEncoder(w).Encode(rec.stop("relay"))
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}
	if err := r.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// RunKafkaBroker is the `outbox-bench kafka-broker` child: an in-process Kafka
// (kfake) in a process of its own, so that its CPU is counted as the
// broker's. It prints its address on stdout and runs until SIGTERM.
func RunKafkaBroker(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("outbox-bench kafka-broker", flag.ContinueOnError)
	topic := fs.String("topic", "", "topic to create")
	partitions := fs.Int("partitions", 6, "partitions of the topic")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(*partitions)}
	if *topic != "" {
		opts = append(opts, kfake.SeedTopics(int32(*partitions), *topic))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		fmt.Fprintf(stderr, "outbox-bench kafka-broker: %v\n", err)
		return 1
	}
	defer c.Close()
	fmt.Fprintln(stdout, c.ListenAddrs()[0])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return 0
}

var errChildExited = errors.New("child process exited")
