package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// relayProc is a relay running as a child process.
type relayProc struct {
	cmd     *exec.Cmd
	pid     int
	admin   string
	logPath string
	exited  chan struct{}
	waitErr error
	ownRec  bool // the child is outbox-bench relay (has /bench/latency)
	client  *http.Client

	stopped bool
	stopCPU time.Duration
	stopHWM int64
	stopErr error
}

// relayConfig renders the relay.yaml of one run.
func relayConfig(o *Options, dbURL, schema, slot, pub, admin string, env sinkEnv) string {
	var b strings.Builder
	fmt.Fprintf(&b, "database:\n  url: %q\n  schema: %s\n  slot: %s\n  publication: %s\n", dbURL, schema, slot, pub)
	fmt.Fprintf(&b, "admin:\n  listen: %q\n", admin)
	fmt.Fprintf(&b, "log:\n  level: %s\n  format: text\n", cmpOr(o.RelayLogLevel, "warn"))
	b.WriteString("delivery:\n")
	if o.OnDelivered != "" {
		fmt.Fprintf(&b, "  on_delivered: %s\n", o.OnDelivered)
	}
	for _, kv := range []struct {
		k string
		v int
	}{{"batch_size", o.BatchSize}, {"batches_in_flight", o.BatchesInFlight}, {"max_pending", o.MaxPending}, {"mark_batch", o.MarkBatch}} {
		if kv.v > 0 {
			fmt.Fprintf(&b, "  %s: %d\n", kv.k, kv.v)
		}
	}
	if o.MarkInterval > 0 {
		fmt.Fprintf(&b, "  mark_interval: %s\n", o.MarkInterval)
	}
	if v := readLinger(o); v != "" {
		fmt.Fprintf(&b, "  read_linger: %s\n", v)
	}
	fmt.Fprintf(&b, "sinks:\n  - name: out\n    type: %s\n", env.typ())
	for line := range strings.SplitSeq(strings.TrimSpace(env.entry()), "\n") {
		if line != "" {
			fmt.Fprintf(&b, "    %s\n", line)
		}
	}
	for _, kv := range o.SinkOptions[env.name()] {
		fmt.Fprintf(&b, "    %s\n", kv)
	}
	fmt.Fprintf(&b, "routes:\n  - name: orders\n    match: \"order.*\"\n    sink: out\n    destination: %q\n", env.destination())
	return b.String()
}

// readLinger is --read-linger as relay.yaml writes it: "" for the relay's
// default, "off" for a negative value.
func readLinger(o *Options) string {
	switch {
	case o.ReadLinger > 0:
		return o.ReadLinger.String()
	case o.ReadLinger < 0:
		return "off"
	}
	return ""
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startRelay writes the relay.yaml and starts the relay: `outbox-bench relay`,
// or `<relay-bin> relay` when --relay-bin is set and the sink is not null.
func startRelay(o *Options, dir, tag, dbURL, schema, slot, pub string, env sinkEnv, profile bool) (*relayProc, error) {
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "relay-"+tag+".yaml")
	if err := os.WriteFile(cfgPath, []byte(relayConfig(o, dbURL, schema, slot, pub, admin, env)), 0o600); err != nil {
		return nil, err
	}
	p := &relayProc{admin: admin, logPath: filepath.Join(dir, "relay-"+tag+".log"), exited: make(chan struct{}),
		client: &http.Client{Timeout: 5 * time.Second}}
	var cmd *exec.Cmd
	if o.RelayBin != "" && env.typ() != "null" {
		cmd = exec.Command(o.RelayBin, "relay", "--config", cfgPath)
	} else {
		args := []string{"relay", "--config", cfgPath}
		if profile && o.CPUProfileDir != "" {
			args = append(args, "--cpuprofile", filepath.Join(o.CPUProfileDir, "relay-"+tag+".pprof"))
		}
		cmd = exec.Command(o.self, args...)
		p.ownRec = true
	}
	logf, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = devnull, logf // the stdout sink writes to /dev/null
	cmd.Env = append(append(os.Environ(), "GOTRACEBACK=all"), o.RelayEnv...)
	if err := cmd.Start(); err != nil {
		logf.Close()
		devnull.Close()
		return nil, fmt.Errorf("start relay: %w", err)
	}
	p.cmd, p.pid = cmd, cmd.Process.Pid
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		devnull.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *relayProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *relayProc) failure() error {
	log, _ := os.ReadFile(p.logPath)
	tail := string(log)
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	return fmt.Errorf("relay exited (%v); its log (%s) ends:\n%s", p.waitErr, p.logPath, tail)
}

// metrics scrapes the relay's /metrics and sums each metric over its labels.
func (p *relayProc) metrics() (map[string]float64, error) {
	path := "/metrics"
	if p.ownRec {
		path = "/bench/metrics" // the relay's metrics only: cheap to poll
	}
	resp, err := p.client.Get("http://" + p.admin + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}

// delivered returns outbox_events_delivered_total and outbox_events_read_total.
func (p *relayProc) delivered() (delivered, read float64, err error) {
	m, err := p.metrics()
	if err != nil {
		return 0, 0, err
	}
	return m["outbox_events_delivered_total"], m["outbox_events_read_total"], nil
}

// waitStreaming waits until the relay is active and its walsender holds the slot.
func (p *relayProc) waitStreaming(ctx context.Context, pool *pgxpool.Pool, slot string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return p.failure()
		}
		var active bool
		pool.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active)
		if active {
			if m, err := p.metrics(); err == nil && m["outbox_relay_active"] == 1 {
				return nil
			}
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("relay did not start streaming within 60s (log: %s)", p.logPath)
}

func (p *relayProc) latencyStart() error {
	if !p.ownRec {
		return nil
	}
	resp, err := p.client.Post("http://"+p.admin+"/bench/latency/start", "", nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// latencyStop returns the commit-to-ack latencies the relay recorded since
// latencyStart, or the relay's histogram is used when the child is not ours.
func (p *relayProc) latencyStop() (Latency, error) {
	if !p.ownRec {
		return Latency{Source: "none"}, nil
	}
	resp, err := p.client.Post("http://"+p.admin+"/bench/latency/stop", "", nil)
	if err != nil {
		return Latency{}, err
	}
	defer resp.Body.Close()
	var l Latency
	err = json.NewDecoder(resp.Body).Decode(&l)
	return l, err
}

// usage returns the relay's CPU time so far and its peak RSS.
func (p *relayProc) usage() (cpu time.Duration, hwm int64) {
	if st, err := readProcStat(p.pid); err == nil {
		cpu = st.cpu
	}
	hwm, _, _ = procMemory(p.pid)
	return cpu, hwm
}

// stop sends SIGTERM (the relay finishes in-flight work and confirms its
// position) and waits; it returns the CPU time and peak RSS read just before.
func (p *relayProc) stop() (cpu time.Duration, hwm int64, err error) {
	if p.stopped {
		return p.stopCPU, p.stopHWM, p.stopErr
	}
	p.stopped = true
	cpu, hwm = p.usage()
	p.stopCPU, p.stopHWM = cpu, hwm
	if !p.alive() {
		p.stopErr = p.failure()
		return cpu, hwm, p.stopErr
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(40 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		p.stopErr = fmt.Errorf("relay did not stop within 40s of SIGTERM (log: %s)", p.logPath)
	}
	return cpu, hwm, p.stopErr
}
