package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times (100 on every
// Linux architecture Go supports).
const clockTick = 100

// procStat is what /proc/<pid>/stat says about one process.
type procStat struct {
	ppid     int
	cpu      time.Duration // utime + stime
	children time.Duration // cutime + cstime: reaped children
	comm     string
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// comm is in parentheses and may contain spaces: split after the last ')'.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < 0 || end+2 > len(b) {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[end+2:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(f[i], 10, 64); return n }
	tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / clockTick }
	return procStat{
		ppid:     int(num(1)),
		cpu:      tick(num(11) + num(12)),
		children: tick(num(13) + num(14)),
		comm:     string(b[open+1 : end]),
	}, nil
}

// procMemory returns VmHWM (peak resident set) and VmRSS of pid, in bytes.
func procMemory(pid int) (hwm, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSuffix(strings.TrimSpace(v), " kB")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "VmHWM":
			hwm = n << 10
		case "VmRSS":
			rss = n << 10
		}
	}
	return hwm, rss, nil
}

// procIO returns the read and write system calls pid has made.
func procIO(pid int) (reads, writes int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}

// allPids lists the running processes.
func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// treeCPU is the CPU time used by root and its children, including children
// that exited (their time is added to the parent's cutime when reaped). It
// covers one level of children, which is PostgreSQL's process model.
func treeCPU(root int) time.Duration {
	st, err := readProcStat(root)
	if err != nil {
		return 0
	}
	total := st.cpu + st.children
	for _, pid := range allPids() {
		if pid == root {
			continue
		}
		if c, err := readProcStat(pid); err == nil && c.ppid == root {
			total += c.cpu
		}
	}
	return total
}

// commCPU is the CPU time used by every process whose command name is one of
// names (brokers on this machine: nats-server, redis-server, beam.smp).
func commCPU(names ...string) time.Duration {
	var total time.Duration
	for _, pid := range allPids() {
		st, err := readProcStat(pid)
		if err != nil {
			continue
		}
		for _, n := range names {
			if st.comm == n {
				total += st.cpu
			}
		}
	}
	return total
}

// selfCPU is this process's CPU time (the load generator, consumers and
// bookkeeping).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// systemCPU returns the busy and total time of all CPUs from /proc/stat.
func systemCPU() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0
	}
	var sum, idle int64
	for i, s := range f[1:] {
		if i >= 8 { // guest times are already in user
			break
		}
		n, _ := strconv.ParseInt(s, 10, 64)
		sum += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / clockTick }
	return tick(sum - idle), tick(sum)
}

// postmasterPid finds the PostgreSQL postmaster of a backend: its parent.
func postmasterPid(backendPid int) int {
	st, err := readProcStat(backendPid)
	if err != nil {
		return 0
	}
	return st.ppid
}

// cpuMeter samples the CPU used by each side of the benchmark.
type cpuMeter struct {
	postmaster int
	brokers    []string
	relayPid   func() int
	brokerPid  func() int // an in-process-style broker run as our child (kfake)
	walsender  int        // the relay's walsender, part of PostgreSQL's CPU
}

// cpuSample is a point-in-time reading of cumulative CPU times.
type cpuSample struct {
	at                               time.Time
	pg, bench, relay, broker, busy   time.Duration
	walsender                        time.Duration
	total                            time.Duration
	relayPid, brokerPid, walPid      int
	relayOK, brokerOK, pgOK, stateOK bool
}

func (m *cpuMeter) sample() cpuSample {
	s := cpuSample{at: time.Now(), bench: selfCPU()}
	if m.postmaster > 0 {
		s.pg, s.pgOK = treeCPU(m.postmaster), true
	}
	if m.relayPid != nil {
		if pid := m.relayPid(); pid > 0 {
			if st, err := readProcStat(pid); err == nil {
				s.relay, s.relayPid, s.relayOK = st.cpu, pid, true
			}
		}
	}
	if m.walsender > 0 {
		if st, err := readProcStat(m.walsender); err == nil {
			s.walsender, s.walPid = st.cpu, m.walsender
		}
	}
	s.broker = commCPU(m.brokers...)
	if m.brokerPid != nil {
		if pid := m.brokerPid(); pid > 0 {
			if st, err := readProcStat(pid); err == nil {
				s.broker += st.cpu
				s.brokerPid = pid
			}
		}
	}
	s.busy, s.total = systemCPU()
	s.stateOK = s.total > 0
	return s
}

// CPUSplit is the CPU used during a window, in cores (1.0 = one core busy
// for the whole window).
type CPUSplit struct {
	PG float64 `json:"pg"`
	// WalSender is the part of PG spent in the relay's walsender (logical
	// decoding with pgoutput).
	WalSender float64 `json:"walsender"`
	Bench     float64 `json:"bench"`
	Relay     float64 `json:"relay"`
	Broker    float64 `json:"broker"`
	// Other is every other process on the machine (concurrent builds, tests).
	Other float64 `json:"other"`
	// Idle is what was left of the machine's cores.
	Idle float64 `json:"idle"`
}

func cpuBetween(a, b cpuSample) CPUSplit {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return CPUSplit{}
	}
	cores := func(d time.Duration) float64 { return max(d.Seconds()/wall, 0) }
	s := CPUSplit{PG: cores(b.pg - a.pg), Bench: cores(b.bench - a.bench), Broker: cores(b.broker - a.broker)}
	if a.relayOK && b.relayOK && a.relayPid == b.relayPid {
		s.Relay = cores(b.relay - a.relay)
	}
	if a.walPid != 0 && a.walPid == b.walPid {
		s.WalSender = cores(b.walsender - a.walsender)
	}
	if a.brokerPid != b.brokerPid {
		s.Broker = 0
	}
	if a.stateOK && b.stateOK && b.total > a.total {
		n := float64(runtime.NumCPU())
		frac := float64(b.busy-a.busy) / float64(b.total-a.total)
		busy := frac * n
		s.Other = max(busy-s.PG-s.Bench-s.Relay-s.Broker, 0)
		s.Idle = max(n-busy, 0)
	}
	return s
}

func (s CPUSplit) String() string {
	pg := fmt.Sprintf("pg %.2f", s.PG)
	if s.WalSender > 0 {
		pg = fmt.Sprintf("pg %.2f (walsender %.2f)", s.PG, s.WalSender)
	}
	return fmt.Sprintf("%s, relay %.2f, writers %.2f, broker %.2f, other+kernel %.2f, idle %.2f", pg, s.Relay, s.Bench, s.Broker, s.Other, s.Idle)
}

// findPgBin locates PostgreSQL's server programs, as scripts/services.sh does.
func findPgBin() (string, error) {
	if out, err := runOut("pg_config", "--bindir"); err == nil {
		d := strings.TrimSpace(out)
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	ds, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(ds) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(ds[i], "initdb")); err == nil {
			return ds[i], nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server found (initdb missing): install it (Debian: apt-get install postgresql) or pass --database-url")
}
