package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/migrations"
	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// Options configure a benchmark run. Zero values are filled by Defaults.
type Options struct {
	// DatabaseURL is a PostgreSQL (wal_level=logical) to use as it is. Empty:
	// start a throwaway cluster of our own on PGPort, so that fsync can be
	// set, and remove it at the end.
	DatabaseURL string
	PGPort      int
	ClusterDir  string
	// Fsync lists the modes to run the suite in, in order: "on" (durable),
	// "off". Only with our own cluster; with DatabaseURL the server's setting
	// is reported.
	Fsync []string
	// Sinks to measure, from AllSinks.
	Sinks []string
	// Phases to run: sdk, ceiling, drain, live, latency.
	Phases []string
	// Writers lists the writer counts tried for the 1-event ceiling; the best
	// is used for the live and latency runs. BatchWriters the same for
	// batches of 100.
	Writers, BatchWriters []int
	CeilingDuration       time.Duration
	LiveDuration          time.Duration
	LatencyDuration       time.Duration
	Backlog               int64
	// DrainRuns is how often each sink drains the backlog; the median run
	// is reported.
	DrainRuns   int
	PayloadSize int
	Keys        int
	// LatencyRate is the steady rate of the first latency run (events/s);
	// LatencyFraction of the 1-event ceiling is the rate of the second.
	// NoTrace leaves the trace context out: by default every event carries
	// a traceparent header, as events of an instrumented service do.
	NoTrace         bool
	LatencyRate     float64
	LatencyFraction float64
	SDKIterations   int
	// AssumeCeiling skips the ceiling probes (unless the ceiling phase is
	// asked for) and takes this 1-event rate, with the first Writers count,
	// for the live and latency runs: for quick experiments.
	AssumeCeiling float64

	// Relay knobs written to relay.yaml (0 or "" keeps the relay's default).
	OnDelivered                            string
	BatchSize, BatchesInFlight, MaxPending int
	MarkBatch                              int
	MarkInterval                           time.Duration
	ReadLinger                             time.Duration
	SinkOptions                            map[string][]string // extra "key: value" lines per sink
	NATSURL, AMQPURL, RedisURL             string
	KafkaPartitions                        int
	AMQPQueueType                          string
	NATSStorage                            string // file or memory
	RelayBin                               string // run `<RelayBin> relay` instead of `outbox-bench relay`
	CPUProfileDir                          string // CPU profiles of the relay children
	WorkDir                                string // relay configs and logs; kept when set
	RelayLogLevel                          string // the relays' log level; defaults to warn
	// RelayEnv are KEY=VALUE environment variables for the relay children
	// only (GOMAXPROCS, GOMEMLIMIT, GOGC). Without a GOMAXPROCS entry the
	// relays run with GOMAXPROCS=1, as compose.yaml deploys the relay next
	// to PostgreSQL (docs/performance.md); GOMAXPROCS= (empty) leaves Go's
	// default.
	RelayEnv   []string
	JSONPath   string // raw results
	Out, Log   io.Writer
	self       string
	workDir    string
	ownCluster bool
	phaseSet   map[string]bool
}

// Defaults fills the zero fields.
func (o *Options) Defaults() {
	if o.PGPort == 0 {
		o.PGPort = 54339
	}
	if len(o.Fsync) == 0 {
		o.Fsync = []string{"on"}
	}
	if len(o.Sinks) == 0 {
		o.Sinks = AllSinks
	}
	if len(o.Phases) == 0 {
		o.Phases = []string{"sdk", "ceiling", "drain", "live", "latency"}
	}
	if len(o.Writers) == 0 {
		o.Writers = []int{2, 4, 8, 16}
	}
	if len(o.BatchWriters) == 0 {
		o.BatchWriters = []int{1, 2, 4}
	}
	o.CeilingDuration = cmpOr(o.CeilingDuration, 4*time.Second)
	o.LiveDuration = cmpOr(o.LiveDuration, 10*time.Second)
	o.LatencyDuration = cmpOr(o.LatencyDuration, 10*time.Second)
	o.Backlog = cmpOr(o.Backlog, 200_000)
	o.DrainRuns = cmpOr(o.DrainRuns, 3)
	o.PayloadSize = cmpOr(o.PayloadSize, 300)
	o.Keys = cmpOr(o.Keys, 10_000)
	o.LatencyRate = cmpOr(o.LatencyRate, 1000)
	o.LatencyFraction = cmpOr(o.LatencyFraction, 0.5)
	o.SDKIterations = cmpOr(o.SDKIterations, 1000)
	o.KafkaPartitions = cmpOr(o.KafkaPartitions, 6)
	o.NATSURL = cmpOr(o.NATSURL, os.Getenv("OUTBOX_TEST_NATS_URL"), "nats://127.0.0.1:4222")
	o.AMQPURL = cmpOr(o.AMQPURL, os.Getenv("OUTBOX_TEST_AMQP_URL"), "amqp://guest:guest@127.0.0.1:5672/")
	o.RedisURL = cmpOr(o.RedisURL, os.Getenv("OUTBOX_TEST_REDIS_URL"), "redis://127.0.0.1:6379/0")
	if o.AMQPQueueType == "" {
		o.AMQPQueueType = "quorum"
	}
	if !slices.ContainsFunc(o.RelayEnv, func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") }) {
		o.RelayEnv = append(o.RelayEnv, "GOMAXPROCS=1")
	}
	if o.NATSStorage == "" {
		o.NATSStorage = "file"
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
}

func cmpOr[T comparable](vals ...T) T {
	var zero T
	for _, v := range vals {
		if v != zero {
			return v
		}
	}
	return zero
}

// Report is everything one run measured.
type Report struct {
	Started  time.Time     `json:"started"`
	Machine  string        `json:"machine"`
	Command  string        `json:"command"`
	Modes    []*ModeResult `json:"modes"`
	Duration time.Duration `json:"duration"`
}

// ModeResult is the suite in one fsync mode.
type ModeResult struct {
	Mode      string            `json:"mode"`
	Database  string            `json:"database"`
	Settings  map[string]string `json:"settings"`
	SDK       *SDKResult        `json:"sdk,omitempty"`
	Ceiling   *CeilingResult    `json:"ceiling,omitempty"`
	RawDecode *DrainResult      `json:"raw_decode,omitempty"`
	Sinks     []*SinkResult     `json:"sinks"`
	Errors    []string          `json:"errors,omitempty"`
}

// Probe is writers committing as fast as they can for a while.
type Probe struct {
	Writers int      `json:"writers"`
	Batch   int      `json:"batch"`
	Events  int64    `json:"events"`
	Seconds float64  `json:"seconds"`
	Rate    float64  `json:"rate"`
	CPU     CPUSplit `json:"cpu"`
}

// CeilingResult is the insert ceiling with the relay off.
type CeilingResult struct {
	Single     []Probe `json:"single"`
	Batch      []Probe `json:"batch"`
	BestSingle Probe   `json:"best_single"`
	BestBatch  Probe   `json:"best_batch"`
}

// DrainResult is a backlog read by a relay (or the raw decoder).
type DrainResult struct {
	Events   int64   `json:"events"`
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rate"`
	WALBytes int64   `json:"wal_bytes"`
	MBps     float64 `json:"mb_per_s"`
	Ratio    float64 `json:"ratio_to_raw,omitempty"`
	// RawRate is the raw decode rate measured just before this drain.
	RawRate float64 `json:"raw_rate,omitempty"`
	// Runs, Min and Max describe the raw decode runs (one before each
	// drain); Rate is then their median. For a sink's drain, Runs counts
	// its runs, this is the median one, and MinRatio and MaxRatio bound
	// the others.
	Runs            int      `json:"runs,omitempty"`
	Min             float64  `json:"min,omitempty"`
	Max             float64  `json:"max,omitempty"`
	MinRatio        float64  `json:"min_ratio,omitempty"`
	MaxRatio        float64  `json:"max_ratio,omitempty"`
	RelayCPUPer100k float64  `json:"relay_cpu_s_per_100k,omitempty"`
	PeakRSS         int64    `json:"peak_rss,omitempty"`
	CPU             CPUSplit `json:"cpu"`
}

// LagSample is one sample of a live run.
type LagSample struct {
	At        float64 `json:"t"`
	Written   int64   `json:"written"`
	Delivered int64   `json:"delivered"`
	LagBytes  int64   `json:"lag_bytes"`
}

// LiveResult is writers at the ceiling with the relay running.
type LiveResult struct {
	Writers     int     `json:"writers"`
	Seconds     float64 `json:"seconds"`
	WriterRate  float64 `json:"writer_rate"`
	WriterRatio float64 `json:"writer_ratio"`
	// Baseline is the same writers' rate with the relay off, measured just
	// before (same table, same background load, as near in time as can be).
	Baseline       float64 `json:"baseline_rate"`
	Delivered      float64 `json:"delivered_rate"`
	DeliveredRatio float64 `json:"delivered_ratio"`
	BacklogSlope   float64 `json:"backlog_slope"`
	LagSlope       float64 `json:"lag_slope_bytes"`
	LagMax         int64   `json:"lag_max_bytes"`
	Flat           bool    `json:"flat"`
	CatchUp        float64 `json:"catch_up_s"`
	// WALPerEvent is the WAL written per event during the run: the insert,
	// its index entries, the commit, and the relay's mark.
	WALPerEvent     float64     `json:"wal_bytes_per_event"`
	CPU             CPUSplit    `json:"cpu"`
	RelayCPUPer100k float64     `json:"relay_cpu_s_per_100k"`
	Samples         []LagSample `json:"samples"`
}

// LatencyResult is commit-to-ack latency at a steady rate.
type LatencyResult struct {
	Target   float64  `json:"target_rate"`
	Achieved float64  `json:"achieved_rate"`
	Consumer Latency  `json:"consumer"`
	Relay    Latency  `json:"relay"`
	CPU      CPUSplit `json:"cpu"`
	// RelayCPUPer100k is the relay's CPU seconds per 100,000 events at this rate.
	RelayCPUPer100k float64 `json:"relay_cpu_s_per_100k"`
	// RelayReads and RelayWrites are the relay's read and write system
	// calls per event (socket reads and writes: PostgreSQL and the broker).
	RelayReads  float64 `json:"relay_reads_per_event"`
	RelayWrites float64 `json:"relay_writes_per_event"`
}

// Best is the consumer's measurement when there is one, else the relay's.
func (r *LatencyResult) Best() Latency {
	if r.Consumer.N > 0 {
		return r.Consumer
	}
	return r.Relay
}

// SinkResult is one sink's rows of the table.
type SinkResult struct {
	Name    string           `json:"name"`
	Drain   *DrainResult     `json:"drain,omitempty"`
	Live    *LiveResult      `json:"live,omitempty"`
	Latency []*LatencyResult `json:"latency,omitempty"`
	PeakRSS int64            `json:"peak_rss"`
	Errors  []string         `json:"errors,omitempty"`
}

func (s *SinkResult) fail(err error) {
	s.Errors = append(s.Errors, err.Error())
}

func randomID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Run runs the benchmark and prints the table.
func Run(ctx context.Context, o *Options) (*Report, error) {
	o.Defaults()
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	o.self = self
	o.phaseSet = map[string]bool{}
	for _, p := range o.Phases {
		switch p {
		case "sdk", "ceiling", "drain", "live", "latency":
			o.phaseSet[p] = true
		default:
			return nil, fmt.Errorf("unknown phase %q (choose from sdk, ceiling, drain, live, latency)", p)
		}
	}
	if (o.phaseSet["live"] || o.phaseSet["latency"]) && o.AssumeCeiling == 0 {
		o.phaseSet["ceiling"] = true // their rates derive from it
	}
	for _, s := range o.Sinks {
		if !slices.Contains(AllSinks, s) {
			return nil, fmt.Errorf("unknown sink %q (choose from %s)", s, strings.Join(AllSinks, ", "))
		}
	}
	if o.CPUProfileDir != "" {
		if err := os.MkdirAll(o.CPUProfileDir, 0o755); err != nil {
			return nil, err
		}
	}
	if o.WorkDir != "" {
		o.workDir = o.WorkDir
		if err := os.MkdirAll(o.workDir, 0o755); err != nil {
			return nil, err
		}
	} else {
		o.workDir, err = os.MkdirTemp("", "outbox-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(o.workDir)
	}

	rep := &Report{Started: time.Now(), Machine: machine(), Command: strings.Join(os.Args, " ")}
	dbURL := o.DatabaseURL
	if dbURL == "" {
		o.ownCluster = true
		for _, m := range o.Fsync {
			if m != "on" && m != "off" {
				return nil, fmt.Errorf("--fsync: %q is not on or off", m)
			}
		}
		dir := o.ClusterDir
		if dir == "" {
			dir, err = os.MkdirTemp("", "outbox-bench-pg-")
			if err != nil {
				return nil, err
			}
		}
		o.logf("starting a throwaway PostgreSQL cluster on 127.0.0.1:%d (fsync=%s) in %s", o.PGPort, o.Fsync[0], dir)
		c, err := startCluster(ctx, dir, o.PGPort, o.Fsync[0] == "on")
		if err != nil {
			return nil, err
		}
		defer func() {
			if err := c.stop(); err != nil {
				o.logf("stopping the throwaway cluster: %v", err)
			}
		}()
		dbURL = c.url
	} else {
		o.Fsync = []string{"server"}
	}
	for i, mode := range o.Fsync {
		if ctx.Err() != nil {
			break
		}
		if o.ownCluster && i > 0 {
			conn, err := pgx.Connect(ctx, dbURL)
			if err != nil {
				return rep, err
			}
			err = setFsync(ctx, conn, mode == "on")
			conn.Close(ctx)
			if err != nil {
				return rep, err
			}
		}
		mr := runMode(ctx, o, dbURL)
		rep.Modes = append(rep.Modes, mr)
		if ctx.Err() == nil {
			printTable(o.Out, o, mr)
		}
	}
	rep.Duration = time.Since(rep.Started)
	if o.JSONPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(o.JSONPath, b, 0o644); err != nil {
			return rep, err
		}
	}
	return rep, ctx.Err()
}

func (o *Options) logf(format string, args ...any) {
	fmt.Fprintf(o.Log, "bench: "+format+"\n", args...)
}

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		var kb int64
		fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "MemTotal:")), "%d", &kb)
		mem = fmt.Sprintf("%.0f GB RAM", float64(kb)/(1<<20))
	}
	return fmt.Sprintf("%d cores (%s), %s, %s/%s", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH)
}

// runner is one mode's run: one schema, publication and set of slots.
type runner struct {
	o      *Options
	dbURL  string
	schema string
	pub    string
	pool   *pgxpool.Pool
	load   *load
	meter  *cpuMeter
	res    *ModeResult
	slots  []string
	best   int // writers at the 1-event ceiling
}

func runMode(ctx context.Context, o *Options, dbURL string) *ModeResult {
	id := randomID()
	r := &runner{o: o, dbURL: dbURL, schema: "bench_" + id, pub: "bench_" + id + "_pub",
		res: &ModeResult{Settings: map[string]string{}}}
	r.best = o.Writers[len(o.Writers)-1]
	if err := r.setup(ctx); err != nil {
		r.res.Errors = append(r.res.Errors, err.Error())
		o.logf("%v", err)
		r.cleanup()
		return r.res
	}
	defer r.cleanup()
	o.logf("mode %s: schema %s on %s", r.res.Mode, r.schema, r.res.Database)
	if o.AssumeCeiling > 0 && !o.phaseSet["ceiling"] {
		p := Probe{Writers: o.Writers[0], Batch: 1, Rate: o.AssumeCeiling}
		r.res.Ceiling = &CeilingResult{BestSingle: p}
		r.best = p.Writers
	}
	steps := []struct {
		phase string
		f     func(context.Context) error
	}{
		{"sdk", r.sdk},
		{"ceiling", r.ceiling},
		// Drains last: a broker still deleting the drains' queues and
		// streams (600,000 messages per sink) slows the latency runs.
		{"live", r.liveAndLatency},
		{"drain", r.drains},
	}
	for _, st := range steps {
		if ctx.Err() != nil {
			break
		}
		if st.phase == "live" && !o.phaseSet["live"] && !o.phaseSet["latency"] {
			continue
		}
		if st.phase != "live" && !o.phaseSet[st.phase] {
			continue
		}
		if err := st.f(ctx); err != nil {
			o.logf("%s: %v", st.phase, err)
			r.res.Errors = append(r.res.Errors, fmt.Sprintf("%s: %v", st.phase, err))
		}
	}
	return r.res
}

func (r *runner) setup(ctx context.Context) error {
	pcfg, err := pgxpool.ParseConfig(r.dbURL)
	if err != nil {
		return fmt.Errorf("database url: %w", err)
	}
	pcfg.MaxConns = int32(max(slices.Max(r.o.Writers), slices.Max(r.o.BatchWriters)) + 6)
	pcfg.ConnConfig.RuntimeParams["application_name"] = "outbox-bench"
	r.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	for _, s := range []string{"server_version", "fsync", "full_page_writes", "synchronous_commit", "wal_level", "shared_buffers", "max_wal_size"} {
		var v string
		if err := r.pool.QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v); err != nil {
			return fmt.Errorf("connect to PostgreSQL: %w", err)
		}
		r.res.Settings[s] = v
	}
	if r.res.Settings["wal_level"] != "logical" {
		return fmt.Errorf("wal_level is %s: the relay needs logical", r.res.Settings["wal_level"])
	}
	fs := r.res.Settings["fsync"]
	r.res.Mode = "fsync=" + fs
	if fs == "on" {
		r.res.Mode += " (durable)"
	} else {
		r.res.Mode += " (not durable)"
	}
	r.res.Database = "own throwaway cluster, " + hostPort(r.dbURL)
	if !r.o.ownCluster {
		r.res.Database = "--database-url " + hostPort(r.dbURL)
	}
	var backend int
	r.pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend)
	r.meter = &cpuMeter{postmaster: postmasterPid(backend)}

	db := stdlib.OpenDBFromPool(r.pool)
	defer db.Close()
	m, err := migrations.New(db, &migrations.Config{Schema: r.schema, Publication: r.pub})
	if err != nil {
		return err
	}
	if _, err := m.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	w, err := sdk.New(&sdk.Config{Schema: r.schema})
	if err != nil {
		return err
	}
	r.load = newLoad(r.pool, w, r.o.PayloadSize, r.o.Keys, !r.o.NoTrace)
	// open the pool's connections now, not during the first measurement
	var conns []*pgxpool.Conn
	for range pcfg.MaxConns - 2 {
		c, err := r.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	return nil
}

func hostPort(dbURL string) string {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
}

// cleanup drops everything the run created in the database.
func (r *runner) cleanup() {
	if r.pool == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rows, _ := r.pool.Query(ctx, "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE $1", r.schema+"%")
	slots, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, s := range slots {
		r.dropSlot(ctx, s)
	}
	for _, q := range []string{
		"DROP PUBLICATION IF EXISTS " + outboxschema.Quote(r.pub),
		"DROP SCHEMA IF EXISTS " + outboxschema.Quote(r.schema) + " CASCADE",
	} {
		if _, err := r.pool.Exec(ctx, q); err != nil {
			r.o.logf("cleanup: %s: %v", q, err)
		}
	}
	r.pool.Close()
}

func (r *runner) createSlot(ctx context.Context, name string) error {
	_, err := r.pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", name)
	if err != nil {
		return fmt.Errorf("create slot %s: %w", name, err)
	}
	return nil
}

// dropSlot drops a slot, ending a walsender that still holds it.
func (r *runner) dropSlot(ctx context.Context, name string) {
	for range 100 {
		_, err := r.pool.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", name)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "is active") || ctx.Err() != nil {
			r.o.logf("drop slot %s: %v", name, err)
			return
		}
		r.pool.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", name)
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *runner) sdk(ctx context.Context) error {
	res, err := measureSDK(ctx, r.dbURL, r.schema, r.load.w, r.load, r.o.SDKIterations)
	if err != nil {
		return err
	}
	r.res.SDK = res
	r.o.logf("sdk: business tx %s, with Write %s (+%s); Write adds %d statement(s), %d round trip(s); WriteBatch(100) %d statement(s), %d round trip(s)",
		ms(res.TxMean), ms(res.WithWriteMean), ms(res.WithWriteMean-res.TxMean), res.WriteStatements, res.WriteRoundTrips, res.BatchStatements, res.BatchRoundTrips)
	return nil
}

func (r *runner) probe(ctx context.Context, writers, batch int) (Probe, error) {
	s0 := r.meter.sample()
	n, d, err := r.load.closed(ctx, writers, batch, r.o.CeilingDuration)
	s1 := r.meter.sample()
	p := Probe{Writers: writers, Batch: batch, Events: n, Seconds: d.Seconds(), Rate: float64(n) / d.Seconds(), CPU: cpuBetween(s0, s1)}
	return p, err
}

func (r *runner) ceiling(ctx context.Context) error {
	c := &CeilingResult{}
	r.res.Ceiling = c
	for _, n := range r.o.Writers {
		p, err := r.probe(ctx, n, 1)
		if err != nil {
			return err
		}
		r.o.logf("ceiling: %d writers, 1 event/tx: %.0f events/s (cpu %s)", n, p.Rate, p.CPU)
		c.Single = append(c.Single, p)
		if p.Rate > c.BestSingle.Rate {
			c.BestSingle = p
		}
	}
	for _, n := range r.o.BatchWriters {
		p, err := r.probe(ctx, n, 100)
		if err != nil {
			return err
		}
		r.o.logf("ceiling: %d writers, batches of 100: %.0f events/s (cpu %s)", n, p.Rate, p.CPU)
		c.Batch = append(c.Batch, p)
		if p.Rate > c.BestBatch.Rate {
			c.BestBatch = p
		}
	}
	r.best = c.BestSingle.Writers
	return nil
}

func (r *runner) walLSN(ctx context.Context) (int64, error) {
	var lsn int64
	err := r.pool.QueryRow(ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").Scan(&lsn)
	return lsn, err
}

// drains has, per sink and DrainRuns times, a fresh backlog written with the
// relay off (the previous one truncated), the raw decoder read it and the
// sink's relay drain it, each from a copy of a slot created just before the
// backlog (pg_copy_logical_replication_slot). The raw read comes just before
// the drain, so that each ratio compares runs under the same background load;
// the sink's result is its median run. Every drain marks (or deletes) rows
// written once and never touched, as in production: a backlog drained and
// unmarked before is slower to mark (its pages hold older row versions).
func (r *runner) drains(ctx context.Context) error {
	template := r.schema + "_backlog"
	defer r.dropSlot(context.Background(), template)
	var raws []*DrainResult
	for _, s := range r.o.Sinks {
		var runs []*DrainResult
		for run := range r.o.DrainRuns {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.dropSlot(ctx, template)
			if _, err := r.pool.Exec(ctx, "TRUNCATE "+outboxschema.Quote(r.schema)+".events"); err != nil {
				return fmt.Errorf("truncate the previous backlog: %w", err)
			}
			wal, err := r.backlog(ctx, template)
			if err != nil {
				return err
			}
			rawSlot := fmt.Sprintf("%s_raw_%s_%d", r.schema, s, run)
			if err := r.copySlot(ctx, template, rawSlot); err != nil {
				return err
			}
			s0 := r.meter.sample()
			d, err := rawDecode(ctx, r.dbURL, rawSlot, r.pub, r.o.Backlog)
			s1 := r.meter.sample()
			r.dropSlot(ctx, rawSlot)
			if err != nil {
				return fmt.Errorf("raw decode: %w", err)
			}
			rd := &DrainResult{Events: r.o.Backlog, Seconds: d.Seconds(), Rate: float64(r.o.Backlog) / d.Seconds(), WALBytes: wal,
				MBps: float64(wal) / 1e6 / d.Seconds(), CPU: cpuBetween(s0, s1)}
			raws = append(raws, rd)
			r.o.logf("raw pgoutput decode: %.0f events/s, %.1f MB/s (cpu %s)", rd.Rate, rd.MBps, rd.CPU)
			drainSlot := fmt.Sprintf("%s_drain_%s_%d", r.schema, s, run)
			if err := r.copySlot(ctx, template, drainSlot); err != nil {
				return err
			}
			dr, err := r.drainOne(ctx, s, drainSlot, wal)
			if err != nil {
				r.o.logf("drain %s: %v", s, err)
				r.sinkResult(s).fail(fmt.Errorf("drain: %w", err))
				break
			}
			dr.RawRate = rd.Rate
			dr.Ratio = dr.Rate / rd.Rate
			r.o.logf("drain %s (run %d of %d): %.0f events/s, %.1f MB/s, %.2fx raw; relay %.2f CPU s/100k events, peak RSS %s (cpu %s)",
				s, run+1, r.o.DrainRuns, dr.Rate, dr.MBps, dr.Ratio, dr.RelayCPUPer100k, mb(dr.PeakRSS), dr.CPU)
			runs = append(runs, dr)
		}
		if len(runs) == 0 {
			continue
		}
		sr := r.sinkResult(s)
		for _, dr := range runs {
			sr.PeakRSS = max(sr.PeakRSS, dr.PeakRSS)
		}
		slices.SortFunc(runs, func(a, b *DrainResult) int { return cmp.Compare(a.Ratio, b.Ratio) })
		med := *runs[len(runs)/2]
		med.Runs, med.MinRatio, med.MaxRatio = len(runs), runs[0].Ratio, runs[len(runs)-1].Ratio
		sr.Drain = &med
	}
	if len(raws) > 0 {
		slices.SortFunc(raws, func(a, b *DrainResult) int { return cmp.Compare(a.Rate, b.Rate) })
		med := *raws[len(raws)/2]
		med.Runs = len(raws)
		med.Min, med.Max = raws[0].Rate, raws[len(raws)-1].Rate
		r.res.RawDecode = &med
	}
	return nil
}

// copySlot makes a fresh slot at the position of template.
func (r *runner) copySlot(ctx context.Context, template, name string) error {
	if _, err := r.pool.Exec(ctx, "SELECT pg_copy_logical_replication_slot($1, $2)", template, name); err != nil {
		return fmt.Errorf("copy slot %s to %s: %w", template, name, err)
	}
	return nil
}

// backlog creates the template slot, then writes the backlog (batches of
// 100) and returns its WAL size.
func (r *runner) backlog(ctx context.Context, template string) (int64, error) {
	if err := r.createSlot(ctx, template); err != nil {
		return 0, err
	}
	lsn0, err := r.walLSN(ctx)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	bw := 2
	if r.res.Ceiling != nil && r.res.Ceiling.BestBatch.Writers > 0 {
		bw = r.res.Ceiling.BestBatch.Writers
	}
	if err := r.load.fill(ctx, bw, 100, r.o.Backlog); err != nil {
		return 0, fmt.Errorf("write the backlog: %w", err)
	}
	lsn1, err := r.walLSN(ctx)
	if err != nil {
		return 0, err
	}
	r.o.logf("backlog: %d events written in %s (%.1f MB of WAL)", r.o.Backlog, time.Since(t0).Round(time.Millisecond), float64(lsn1-lsn0)/1e6)
	return lsn1 - lsn0, nil
}

func (r *runner) sinkResult(name string) *SinkResult {
	for _, s := range r.res.Sinks {
		if s.Name == name {
			return s
		}
	}
	s := &SinkResult{Name: name}
	r.res.Sinks = append(r.res.Sinks, s)
	return s
}

func (r *runner) drainOne(ctx context.Context, sink, slot string, wal int64) (*DrainResult, error) {
	defer r.dropSlot(context.Background(), slot)
	env, err := newSinkEnv(sink, randomID(), r.o)
	if err != nil {
		return nil, err
	}
	if err := env.setup(ctx); err != nil {
		return nil, err
	}
	defer env.teardown(context.Background())
	p, err := startRelay(r.o, r.o.workDir, "drain-"+sink, r.dbURL, r.schema, slot, r.pub, env, true)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	r.meter.relayPid = func() int { return p.pid }
	r.meter.brokers, r.meter.brokerPid = env.brokerComms(), env.brokerPid
	defer func() { r.meter.walsender = 0 }()
	s0 := r.meter.sample()
	var first time.Time
	deadline := time.Now().Add(10 * time.Minute)
	progress, last := time.Now(), -1.0
	for {
		if !p.alive() {
			return nil, p.failure()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("not drained after 10 minutes (log: %s)", p.logPath)
		}
		del, read, err := p.delivered()
		now := time.Now()
		if err == nil && read != last {
			progress, last = now, read
		}
		if now.Sub(progress) > time.Minute {
			var confirmed, end string
			r.pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&confirmed, &end)
			return nil, fmt.Errorf("no progress for a minute: %.0f of %d events read, %.0f delivered; the slot is confirmed up to %s (WAL end %s) (log: %s)",
				read, r.o.Backlog, del, confirmed, end, p.logPath)
		}
		if err == nil {
			if first.IsZero() && read > 0 {
				first = now
				r.meter.walsender = r.walsenderPid(ctx, slot)
				s0 = r.meter.sample()
			}
			if int64(del) >= r.o.Backlog {
				break
			}
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	end := time.Now()
	s1 := r.meter.sample()
	cpu, hwm, err := p.stop()
	if err != nil {
		return nil, err
	}
	d := end.Sub(first).Seconds()
	dr := &DrainResult{Events: r.o.Backlog, Seconds: d, Rate: float64(r.o.Backlog) / d, WALBytes: wal, MBps: float64(wal) / 1e6 / d,
		RelayCPUPer100k: cpu.Seconds() / float64(r.o.Backlog) * 1e5, PeakRSS: hwm, CPU: cpuBetween(s0, s1)}
	return dr, nil
}

// liveAndLatency runs, per sink, the writers alone (relay off), then one
// relay through the live run and the two latency runs.
func (r *runner) liveAndLatency(ctx context.Context) error {
	for _, s := range r.o.Sinks {
		if ctx.Err() != nil {
			break
		}
		sr := r.sinkResult(s)
		if err := r.liveOne(ctx, s, sr); err != nil {
			r.o.logf("%s: %v", s, err)
			sr.fail(err)
		}
	}
	return nil
}

func (r *runner) liveOne(ctx context.Context, sink string, sr *SinkResult) error {
	env, err := newSinkEnv(sink, randomID(), r.o)
	if err != nil {
		return err
	}
	if err := env.setup(ctx); err != nil {
		return err
	}
	defer env.teardown(context.Background())
	var baseline Probe
	if r.o.phaseSet["live"] {
		// the writers alone, just before, for the ratio (before the slot
		// exists: its events must not be the relay's backlog)
		r.meter.relayPid = nil
		r.meter.brokers, r.meter.brokerPid = env.brokerComms(), env.brokerPid
		d := r.o.CeilingDuration
		r.o.CeilingDuration = r.o.LiveDuration
		baseline, err = r.probe(ctx, r.best, 1)
		r.o.CeilingDuration = d
		if err != nil {
			return err
		}
		r.o.logf("%s: writers with the relay off: %.0f events/s", sink, baseline.Rate)
	}
	slot := r.schema + "_live_" + sink
	if err := r.createSlot(ctx, slot); err != nil {
		return err
	}
	defer r.dropSlot(context.Background(), slot)
	p, err := startRelay(r.o, r.o.workDir, "live-"+sink, r.dbURL, r.schema, slot, r.pub, env, true)
	if err != nil {
		return err
	}
	defer p.stop()
	if err := p.waitStreaming(ctx, r.pool, slot); err != nil {
		return err
	}
	if err := r.warmup(ctx, p); err != nil {
		return err
	}
	r.meter.relayPid = func() int { return p.pid }
	r.meter.brokers, r.meter.brokerPid = env.brokerComms(), env.brokerPid
	r.meter.walsender = r.walsenderPid(ctx, slot)
	defer func() { r.meter.walsender = 0 }()

	if r.o.phaseSet["live"] {
		lr, err := r.live(ctx, p, slot, baseline.Rate)
		if err != nil {
			return fmt.Errorf("live: %w", err)
		}
		sr.Live = lr
	}
	if r.o.phaseSet["latency"] {
		rates := []float64{r.o.LatencyRate}
		if c := r.res.Ceiling; c != nil && c.BestSingle.Rate > 0 {
			rates = append(rates, r.o.LatencyFraction*c.BestSingle.Rate)
		}
		for _, rate := range rates {
			lr, err := r.latency(ctx, p, env, rate)
			if err != nil {
				return fmt.Errorf("latency at %.0f/s: %w", rate, err)
			}
			sr.Latency = append(sr.Latency, lr)
		}
	}
	_, hwm, err := p.stop()
	sr.PeakRSS = max(sr.PeakRSS, hwm)
	return err
}

// warmup sends a few hundred events through a freshly started relay and
// waits for them: connections are open, caches filled, and the relay's
// resume catch-up (it holds the first events after a start until it has
// looked up up to 500 of them, or its status interval passes) is over before
// anything is measured.
func (r *runner) warmup(ctx context.Context, p *relayProc) error {
	const n = 600
	d0, _, err := p.delivered()
	if err != nil {
		return err
	}
	base := r.load.seq.Add(n) - n
	if err := r.load.paced(ctx, 4, 2000, n, newCommitLog(base, n)); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if del, _, err := p.delivered(); err == nil && del-d0 >= n {
			return nil
		}
		if !p.alive() {
			return p.failure()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("warm-up: the relay did not deliver %d events within 30s (log: %s)", n, p.logPath)
}

func (r *runner) walsenderPid(ctx context.Context, slot string) int {
	var pid int
	r.pool.QueryRow(ctx, "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&pid)
	return pid
}

func (r *runner) slotLag(ctx context.Context, slot string) int64 {
	var lag int64
	r.pool.QueryRow(ctx, "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&lag)
	return lag
}

func (r *runner) live(ctx context.Context, p *relayProc, slot string, baseline float64) (*LiveResult, error) {
	w0 := r.load.committed.Load()
	d0, _, err := p.delivered()
	if err != nil {
		return nil, err
	}
	cpu0, _ := p.usage()
	lsn0, err := r.walLSN(ctx)
	if err != nil {
		return nil, err
	}
	s0 := r.meter.sample()
	type done struct {
		n   int64
		d   time.Duration
		err error
	}
	ch := make(chan done, 1)
	t0 := time.Now()
	go func() {
		n, d, err := r.load.closed(ctx, r.best, 1, r.o.LiveDuration)
		ch <- done{n, d, err}
	}()
	lr := &LiveResult{Writers: r.best, Baseline: baseline}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var wd done
	var d1 float64
	var s1 cpuSample
loop:
	for {
		select {
		case wd = <-ch:
			s1 = r.meter.sample()
			d1, _, _ = p.delivered()
			break loop
		case <-tick.C:
			del, _, _ := p.delivered()
			lr.Samples = append(lr.Samples, LagSample{At: time.Since(t0).Seconds(), Written: r.load.committed.Load() - w0,
				Delivered: int64(del - d0), LagBytes: r.slotLag(ctx, slot)})
		}
	}
	if wd.err != nil {
		return nil, wd.err
	}
	if !p.alive() {
		return nil, p.failure()
	}
	lr.Seconds = wd.d.Seconds()
	lr.WriterRate = float64(wd.n) / lr.Seconds
	lr.Delivered = (d1 - d0) / lr.Seconds
	lr.CPU = cpuBetween(s0, s1)
	if c := r.res.Ceiling; c != nil {
		lr.DeliveredRatio = lr.Delivered / c.BestSingle.Rate
	}
	if baseline > 0 {
		lr.WriterRatio = lr.WriterRate / baseline
	}
	// catch up
	target := r.load.committed.Load() - w0
	tc := time.Now()
	var delivered float64
	for time.Since(tc) < 2*time.Minute {
		del, _, err := p.delivered()
		if err == nil && int64(del-d0) >= target {
			delivered = del - d0
			break
		}
		if !p.alive() {
			return nil, p.failure()
		}
		time.Sleep(20 * time.Millisecond)
	}
	lr.CatchUp = time.Since(tc).Seconds()
	time.Sleep(200 * time.Millisecond) // the last marks
	cpu1, _ := p.usage()
	if lsn1, err := r.walLSN(ctx); err == nil && target > 0 {
		lr.WALPerEvent = float64(lsn1-lsn0) / float64(target)
	}
	if delivered > 0 {
		lr.RelayCPUPer100k = (cpu1 - cpu0).Seconds() / delivered * 1e5
	}
	for _, s := range lr.Samples {
		lr.LagMax = max(lr.LagMax, s.LagBytes)
	}
	lr.BacklogSlope, lr.LagSlope = trend(lr.Samples, lr.Seconds)
	lr.Flat = lr.BacklogSlope <= max(0.05*lr.WriterRate, 50)
	r.o.logf("live: writers %.0f/s (%.2fx), delivered %.0f/s (%.2fx), backlog trend %+.0f events/s, lag max %s, caught up in %.1fs; relay %.2f CPU s/100k; %.0f WAL bytes/event (cpu %s)",
		lr.WriterRate, lr.WriterRatio, lr.Delivered, lr.DeliveredRatio, lr.BacklogSlope, mb(lr.LagMax), lr.CatchUp, lr.RelayCPUPer100k, lr.WALPerEvent, lr.CPU)
	return lr, nil
}

// trend fits a line to the backlog (written - delivered) and to the slot lag
// over the last 80% of the run: events/s and bytes/s.
func trend(s []LagSample, dur float64) (events, bytes float64) {
	var xs, ev, by []float64
	for _, p := range s {
		if p.At >= 0.2*dur {
			xs = append(xs, p.At)
			ev = append(ev, float64(p.Written-p.Delivered))
			by = append(by, float64(p.LagBytes))
		}
	}
	return slope(xs, ev), slope(xs, by)
}

func slope(x, y []float64) float64 {
	n := float64(len(x))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

func (r *runner) latency(ctx context.Context, p *relayProc, env sinkEnv, rate float64) (*LatencyResult, error) {
	if err := env.reset(ctx); err != nil {
		return nil, err
	}
	n := int(rate * r.o.LatencyDuration.Seconds())
	base := r.load.seq.Add(int64(n)) - int64(n)
	log := newCommitLog(base, n)
	stop, err := env.consume(ctx, func(payload []byte, at time.Time) {
		if seq, ok := parseSeq(payload); ok {
			log.arrive(seq, at)
		}
	})
	if err != nil {
		return nil, err
	}
	var stopOnce sync.Once
	stopConsumer := func() {
		if stop != nil {
			stopOnce.Do(stop)
		}
	}
	defer stopConsumer()
	time.Sleep(500 * time.Millisecond) // let the consumer subscribe
	d0, _, err := p.delivered()
	if err != nil {
		return nil, err
	}
	if err := p.latencyStart(); err != nil {
		return nil, err
	}
	writers := r.best
	s0 := r.meter.sample()
	cpu0, _ := p.usage()
	rd0, wr0 := procIO(p.pid)
	t0 := time.Now()
	if err := r.load.paced(ctx, writers, rate, n, log); err != nil {
		return nil, err
	}
	lr := &LatencyResult{Target: rate, Achieved: float64(n) / time.Since(t0).Seconds(), CPU: cpuBetween(s0, r.meter.sample())}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		del, _, _ := p.delivered()
		if int64(del-d0) >= int64(n) && (stop == nil || log.pending() == 0) {
			break
		}
		if !p.alive() {
			return nil, p.failure()
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopConsumer()
	if cpu1, _ := p.usage(); n > 0 {
		lr.RelayCPUPer100k = (cpu1 - cpu0).Seconds() / float64(n) * 1e5
		rd1, wr1 := procIO(p.pid)
		lr.RelayReads, lr.RelayWrites = float64(rd1-rd0)/float64(n), float64(wr1-wr0)/float64(n)
	}
	if stop != nil {
		lr.Consumer = log.latency()
	}
	lr.Relay, err = p.latencyStop()
	if err != nil {
		return nil, err
	}
	b := lr.Best()
	r.o.logf("latency at %.0f/s (achieved %.0f/s): p50 %s p90 %s p99 %s max %s (%s, %d events, %d missing); relay-side p99 %s; relay %.2f CPU s/100k, %.2f reads and %.2f writes per event (cpu %s)",
		rate, lr.Achieved, ms(b.P50), ms(b.P90), ms(b.P99), ms(b.Max), b.Source, b.N, b.Missing, ms(lr.Relay.P99), lr.RelayCPUPer100k, lr.RelayReads, lr.RelayWrites, lr.CPU)
	return lr, nil
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/1e6)
}

func mb(b int64) string {
	return fmt.Sprintf("%.1f MB", float64(b)/1e6)
}
