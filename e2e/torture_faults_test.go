package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outboxrelay/outbox/internal/tcpproxy"
)

// This file holds the torture test's relay supervisor (the relay as a child
// process, restarted when it ends by itself, as systemd or Kubernetes
// would) and its faults.

// tProc is one relay process.
type tProc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	logPath string
	meant   bool // the test signalled it
}

// tRelays runs the relay.
type tRelays struct {
	t         *testing.T
	cfg, dir  string
	stdout    *tStdout
	mu        sync.Mutex
	cur       *tProc
	all       []*tProc
	selfExits []string // relays that ended without being told to
	termCodes []int    // exit codes after SIGTERM
	stopSup   chan struct{}
	supDone   chan struct{}
}

func newTRelays(t *testing.T, cfg string) *tRelays {
	r := &tRelays{t: t, cfg: cfg, dir: t.TempDir(), stdout: &tStdout{}, stopSup: make(chan struct{}), supDone: make(chan struct{})}
	t.Cleanup(func() {
		r.mu.Lock()
		p := r.cur
		r.mu.Unlock()
		if p != nil {
			p.meant = true
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return r
}

// start starts a relay; the previous one must have ended.
func (r *tRelays) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.startLocked()
}

func (r *tRelays) startLocked() {
	n := len(r.all) + 1
	logPath := filepath.Join(r.dir, fmt.Sprintf("relay-%d.log", n))
	lf, err := os.Create(logPath)
	if err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command(outboxBin, "relay", "--config", r.cfg, "--drain-timeout", "10s")
	out := &lineWriter{c: r.stdout}
	cmd.Stdout, cmd.Stderr = out, lf
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start relay: %v", err)
	}
	p := &tProc{cmd: cmd, done: make(chan struct{}), logPath: logPath}
	go func() {
		p.err = cmd.Wait()
		out.end()
		lf.Close()
		close(p.done)
	}()
	r.cur = p
	r.all = append(r.all, p)
}

// supervise restarts a relay that ended by itself, after a second.
func (r *tRelays) supervise() {
	defer close(r.supDone)
	for {
		r.mu.Lock()
		p := r.cur
		r.mu.Unlock()
		select {
		case <-r.stopSup:
			return
		case <-p.done:
		case <-time.After(200 * time.Millisecond):
			continue
		}
		r.mu.Lock()
		if r.cur == p && !p.meant {
			r.selfExits = append(r.selfExits, fmt.Sprintf("relay %d ended by itself (%v); log %s: %s", len(r.all), p.err, p.logPath, lastLines(p.logPath, 3)))
			r.mu.Unlock()
			time.Sleep(time.Second)
			r.mu.Lock()
			if r.cur == p { // a fault may have started one meanwhile
				r.startLocked()
			}
		}
		r.mu.Unlock()
	}
}

// kill sends SIGKILL to the running relay and waits for it.
func (r *tRelays) kill() {
	r.mu.Lock()
	p := r.cur
	p.meant = true
	r.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// term sends SIGTERM and waits (at most a minute) for the relay to drain.
func (r *tRelays) term() {
	r.mu.Lock()
	p := r.cur
	p.meant = true
	r.mu.Unlock()
	if p.cmd.Process.Signal(syscall.SIGTERM) != nil {
		<-p.done // it had ended already: the supervisor reports that
		return
	}
	select {
	case <-p.done:
		r.mu.Lock()
		r.termCodes = append(r.termCodes, p.cmd.ProcessState.ExitCode())
		r.mu.Unlock()
	case <-time.After(time.Minute):
		r.mu.Lock()
		r.termCodes = append(r.termCodes, -1)
		r.mu.Unlock()
		p.cmd.Process.Kill()
		<-p.done
	}
}

// running reports whether a relay runs now.
func (r *tRelays) running() bool {
	r.mu.Lock()
	p := r.cur
	r.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// scanLogs finds panics, fatal errors and data races in every relay's log.
func (r *tRelays) scanLogs() []string {
	var out []string
	for i, p := range r.all {
		b, err := os.ReadFile(p.logPath)
		if err != nil {
			out = append(out, fmt.Sprintf("relay %d: read log: %v", i+1, err))
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") || strings.Contains(l, "WARNING: DATA RACE") {
				out = append(out, fmt.Sprintf("relay %d (%s): %.300s", i+1, p.logPath, l))
			}
		}
	}
	return out
}

func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return tail(strings.TrimSpace(string(b)), n)
}

// tKafka is an in-process Kafka (kfake) the test can stop and start again
// on the same port, keeping its data.
type tKafka struct {
	mu     sync.Mutex
	port   int
	dir    string
	topics []string
	c      *kfake.Cluster
}

func (k *tKafka) start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(k.port), kfake.DataDir(k.dir), kfake.SeedTopics(2, k.topics...))
	if err != nil {
		return err
	}
	k.c = c
	return nil
}

func (k *tKafka) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

func (k *tKafka) addr() string { return fmt.Sprintf("127.0.0.1:%d", k.port) }

// tFaults injects the faults of a run.
type tFaults struct {
	t       *testing.T
	rng     *rand.Rand
	o       *tortureOpts
	relays  *tRelays
	pool    *pgxpool.Pool
	slot    string
	cfg     string
	proxies map[string]*tcpproxy.Proxy // sink -> proxy
	kafka   *tKafka
	world   *tWorld
	counts  map[string]int
	notes   []string
	prunes  int
}

// schedule returns the faults to inject in order: each enabled kind once
// (a cut before a replay, so that the replay finds dead letters), then
// random ones.
func (f *tFaults) schedule(n int) []string {
	var kinds []string
	for _, k := range tortureClasses["faults"] {
		if f.o.on(k) {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) == 0 {
		return nil
	}
	first := append([]string(nil), kinds...)
	f.rng.Shuffle(len(first), func(i, j int) { first[i], first[j] = first[j], first[i] })
	ci, ri := -1, -1
	for i, k := range first {
		switch k {
		case "cut":
			ci = i
		case "replay":
			ri = i
		}
	}
	if ci >= 0 && ri >= 0 && ri < ci {
		first[ci], first[ri] = first[ri], first[ci]
	}
	out := first
	for len(out) < n {
		out = append(out, pick(f.rng, kinds))
	}
	return out
}

func (f *tFaults) note(format string, args ...any) {
	f.notes = append(f.notes, fmt.Sprintf(format, args...))
}

// inject runs one fault to its end (a cut is restored, a killed relay
// started again) so that faults never overlap.
func (f *tFaults) inject(kind string) {
	switch kind {
	case "kill":
		if !f.relays.running() {
			return
		}
		f.relays.kill()
		time.Sleep(time.Duration(f.rng.IntN(800)) * time.Millisecond)
		f.relays.start()
		f.counts["relay kill -9 and restart"]++
	case "term":
		if !f.relays.running() {
			return
		}
		f.relays.term()
		f.relays.start()
		f.counts["relay SIGTERM and restart"]++
	case "slotdrop":
		if f.rng.IntN(2) == 0 {
			if dropSlot(f.t, f.pool, f.slot) {
				f.counts["slot dropped under the running relay"]++
			}
			return
		}
		if !f.relays.running() {
			return
		}
		f.relays.kill()
		time.Sleep(time.Duration(1000+f.rng.IntN(1500)) * time.Millisecond) // writers go on: a snapshot to deliver
		if dropSlot(f.t, f.pool, f.slot) {
			f.counts["slot dropped while the relay was down"]++
		}
		f.relays.start()
	case "cut":
		var sinks []string
		for s := range f.world.sinks {
			if s != "out" {
				sinks = append(sinks, s)
			}
		}
		if len(sinks) == 0 {
			return
		}
		sort.Strings(sinks)
		s := pick(f.rng, sinks)
		if f.counts["cut"] == 0 { // the first cut hits the low-retry route's broker
			for _, r := range f.world.routes {
				if r.lowRetry {
					s = r.sink
				}
			}
		}
		f.counts["cut"]++
		d := time.Duration(1000+f.rng.IntN(2000)) * time.Millisecond
		if s == "kafka" {
			f.kafka.stop()
			time.Sleep(d)
			if err := f.kafka.start(); err != nil {
				f.t.Fatalf("restart kfake: %v", err)
			}
			f.counts["broker cut: kafka stopped"]++
			return
		}
		p := f.proxies[s]
		how := "refused"
		if f.rng.IntN(3) == 0 {
			p.Blackhole()
			how = "blackholed"
		} else {
			p.Cut()
		}
		time.Sleep(d)
		p.Restore()
		f.counts["broker cut: "+s+" "+how]++
	case "replay":
		res := run(f.t, nil, "dlq", "replay", "--config", f.cfg, "--all", "--json")
		var out struct {
			Requested []json.RawMessage `json:"requested"`
		}
		json.Unmarshal([]byte(res.stdout), &out)
		f.counts["dlq replay while streaming"]++
		if res.code != 0 {
			f.note("dlq replay exited %d: %s", res.code, strings.TrimSpace(res.stderr))
		} else {
			f.note("dlq replay requested %d dead letters", len(out.Requested))
		}
	case "prune":
		res := run(f.t, nil, "prune", "--config", f.cfg, "--older-than", "5s", "--json")
		var out struct {
			Deleted int `json:"deleted"`
		}
		json.Unmarshal([]byte(res.stdout), &out)
		f.counts["prune --older-than 5s while streaming"]++
		f.prunes++
		if res.code != 0 {
			f.note("prune exited %d: %s", res.code, strings.TrimSpace(res.stderr))
		} else {
			f.note("prune deleted %d delivered rows", out.Deleted)
		}
	}
}
