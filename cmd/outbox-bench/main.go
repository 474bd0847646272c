// Command outbox-bench measures the relay and the SDK on this machine and
// prints one table with the targets next to each number (`make bench`). See
// docs/performance.md.
//
//	outbox-bench [flags]                 run the benchmark
//	outbox-bench relay --config FILE     (internal) the relay child process
//	outbox-bench kafka-broker --topic T  (internal) an in-process Kafka (kfake) child
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/outboxrelay/outbox/cmd/outbox-bench/bench"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "relay":
			os.Exit(bench.RunRelay(os.Args[2:], os.Stderr))
		case "kafka-broker":
			os.Exit(bench.RunKafkaBroker(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	os.Exit(run(os.Args[1:]))
}

type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l listFlag) Set(s string) error {
	*l.v = nil
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l.v = append(*l.v, p)
		}
	}
	return nil
}

type intsFlag struct{ v *[]int }

func (l intsFlag) String() string {
	if l.v == nil {
		return ""
	}
	var s []string
	for _, n := range *l.v {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

func (l intsFlag) Set(s string) error {
	*l.v = nil
	for p := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a positive number", p)
		}
		*l.v = append(*l.v, n)
	}
	return nil
}

type envFlag struct{ v *[]string }

func (f envFlag) String() string { return "" }

func (f envFlag) Set(s string) error {
	if k, _, ok := strings.Cut(s, "="); !ok || k == "" {
		return fmt.Errorf("%q: write KEY=VALUE", s)
	}
	*f.v = append(*f.v, s)
	return nil
}

type sinkOptFlag map[string][]string

func (f sinkOptFlag) String() string { return "" }

func (f sinkOptFlag) Set(s string) error {
	sink, kv, ok := strings.Cut(s, ":")
	k, v, ok2 := strings.Cut(kv, "=")
	if !ok || !ok2 {
		return fmt.Errorf("%q: write SINK:KEY=VALUE, e.g. kafka:batch_timeout=2ms", s)
	}
	f[sink] = append(f[sink], k+": "+v)
	return nil
}

func run(args []string) int {
	o := &bench.Options{SinkOptions: map[string][]string{}}
	o.Defaults()
	fs := flag.NewFlagSet("outbox-bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: outbox-bench [flags]\n\nMeasures the SDK and the relay against a throwaway PostgreSQL and each sink and prints one table.\nSee docs/performance.md.\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.DatabaseURL, "database-url", "", "use this PostgreSQL (wal_level=logical) instead of starting a throwaway cluster; its fsync setting is reported, not changed")
	fs.IntVar(&o.PGPort, "pg-port", o.PGPort, "port of the throwaway cluster")
	fs.StringVar(&o.ClusterDir, "cluster-dir", "", "directory of the throwaway cluster (default: a new temporary directory; removed at the end)")
	fs.Var(listFlag{&o.Fsync}, "fsync", "fsync modes to run the whole suite in, in order: on (durable), off, or on,off")
	fs.Var(listFlag{&o.Sinks}, "sinks", "sinks to measure: "+strings.Join(bench.AllSinks, ","))
	fs.Var(listFlag{&o.Phases}, "phases", "phases: sdk,ceiling,drain,live,latency (live and latency need the ceiling, which then runs too)")
	fs.Var(intsFlag{&o.Writers}, "writers", "writer counts tried for the 1-event ceiling; the best is used for live and latency runs")
	fs.Var(intsFlag{&o.BatchWriters}, "batch-writers", "writer counts tried for the batch-of-100 ceiling")
	fs.DurationVar(&o.CeilingDuration, "ceiling-duration", o.CeilingDuration, "duration of each ceiling probe")
	fs.DurationVar(&o.LiveDuration, "live-duration", o.LiveDuration, "duration of each live run (writers at the ceiling, relay on)")
	fs.DurationVar(&o.LatencyDuration, "latency-duration", o.LatencyDuration, "duration of each latency run")
	fs.Int64Var(&o.Backlog, "backlog", o.Backlog, "events in the backlog the relays drain")
	fs.IntVar(&o.DrainRuns, "drain-runs", o.DrainRuns, "drains of the backlog per sink (each after a raw decode of it); the median is reported")
	fs.IntVar(&o.PayloadSize, "payload", o.PayloadSize, "payload size in bytes")
	fs.IntVar(&o.Keys, "keys", o.Keys, "distinct ordering keys (aggregate ids)")
	fs.BoolVar(&o.NoTrace, "no-trace", false, "write events without a traceparent header (by default they carry one, as an instrumented service's do)")
	fs.Float64Var(&o.LatencyRate, "latency-rate", o.LatencyRate, "steady rate of the first latency run, events/s")
	fs.Float64Var(&o.LatencyFraction, "latency-fraction", o.LatencyFraction, "rate of the second latency run, as a fraction of the 1-event ceiling")
	fs.Float64Var(&o.AssumeCeiling, "assume-ceiling", 0, "skip the ceiling probes and take this 1-event rate (with the first --writers count) for the live and latency runs")
	fs.IntVar(&o.SDKIterations, "sdk-iterations", o.SDKIterations, "business transactions timed with and without a Write")
	fs.StringVar(&o.OnDelivered, "on-delivered", "", "relay delivery.on_delivered: mark or delete (default: the relay's)")
	fs.IntVar(&o.BatchSize, "batch-size", 0, "relay delivery.batch_size (default: the relay's)")
	fs.IntVar(&o.BatchesInFlight, "batches-in-flight", 0, "relay delivery.batches_in_flight (default: the relay's)")
	fs.IntVar(&o.MaxPending, "max-pending", 0, "relay delivery.max_pending (default: the relay's)")
	fs.IntVar(&o.MarkBatch, "mark-batch", 0, "relay delivery.mark_batch (default: the relay's)")
	fs.DurationVar(&o.MarkInterval, "mark-interval", 0, "relay delivery.mark_interval (default: the relay's)")
	fs.DurationVar(&o.ReadLinger, "read-linger", 0, "relay delivery.read_linger; a negative value writes off (default: the relay's)")
	fs.Var(sinkOptFlag(o.SinkOptions), "sink-opt", "extra sink setting SINK:KEY=VALUE, repeatable (e.g. nats:max_async_pending=8000)")
	fs.StringVar(&o.NATSURL, "nats-url", o.NATSURL, "NATS server with JetStream")
	fs.StringVar(&o.AMQPURL, "amqp-url", o.AMQPURL, "RabbitMQ server")
	fs.StringVar(&o.RedisURL, "redis-url", o.RedisURL, "Redis server")
	fs.IntVar(&o.KafkaPartitions, "kafka-partitions", o.KafkaPartitions, "partitions of the kfake topic")
	fs.StringVar(&o.AMQPQueueType, "amqp-queue-type", o.AMQPQueueType, "type of the RabbitMQ queue: quorum or classic")
	fs.StringVar(&o.NATSStorage, "nats-storage", o.NATSStorage, "storage of the JetStream stream: file or memory (memory leaves the broker's disk writes out)")
	fs.StringVar(&o.RelayBin, "relay-bin", "", "run `BIN relay --config ...` (e.g. bin/outbox) as the relay instead of `outbox-bench relay` (not for the null sink)")
	fs.StringVar(&o.CPUProfileDir, "cpuprofile", "", "write a CPU profile of each relay child into this directory (go tool pprof)")
	fs.Var(envFlag{&o.RelayEnv}, "relay-env", "environment variable KEY=VALUE for the relay children only, repeatable (e.g. GOMAXPROCS=1, GOMEMLIMIT=80MiB)")
	fs.StringVar(&o.RelayLogLevel, "relay-log-level", "warn", "log level of the relay children (their logs are in --work-dir)")
	fs.StringVar(&o.WorkDir, "work-dir", "", "keep the relay configs and logs in this directory (default: a temporary one, removed)")
	fs.StringVar(&o.JSONPath, "json", "", "also write every measurement, with the lag samples, to this JSON file")
	selfProfile := fs.String("cpuprofile-self", "", "write a CPU profile of the load generator (this process) to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "outbox-bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	for _, f := range []struct{ name, v, a, b string }{{"amqp-queue-type", o.AMQPQueueType, "quorum", "classic"}, {"nats-storage", o.NATSStorage, "file", "memory"}} {
		if f.v != f.a && f.v != f.b {
			fmt.Fprintf(os.Stderr, "outbox-bench: --%s must be %s or %s, not %q\n", f.name, f.a, f.b, f.v)
			return 2
		}
	}
	if *selfProfile != "" {
		f, err := os.Create(*selfProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "outbox-bench: %v\n", err)
			return 2
		}
		pprof.StartCPUProfile(f)
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rep, err := bench.Run(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "outbox-bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "bench: done in %s\n", time.Since(start).Round(time.Second))
	for _, m := range rep.Modes {
		if len(m.Errors) > 0 {
			return 1
		}
		for _, s := range m.Sinks {
			if len(s.Errors) > 0 {
				return 1
			}
		}
	}
	return 0
}
