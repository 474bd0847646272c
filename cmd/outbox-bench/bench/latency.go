package bench

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Latency summarises a set of latency samples.
type Latency struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50"`
	P90 time.Duration `json:"p90"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
	// Missing counts events written but never seen (within the wait).
	Missing int `json:"missing,omitempty"`
	// Source says where the end time was taken: "consumer" (an independent
	// consumer's arrival time, the start being the writer's commit return) or
	// "relay" (the relay's broker acknowledgement, the start being pgoutput's
	// commit timestamp).
	Source string `json:"source"`
}

func summarize(samples []time.Duration, source string) Latency {
	if len(samples) == 0 {
		return Latency{Source: source}
	}
	slices.Sort(samples)
	q := func(p float64) time.Duration {
		i := int(p*float64(len(samples))+0.5) - 1
		return samples[min(max(i, 0), len(samples)-1)]
	}
	return Latency{N: len(samples), P50: q(.50), P90: q(.90), P99: q(.99), Max: samples[len(samples)-1], Source: source}
}

// recorder collects latency samples from several goroutines.
type recorder struct {
	on      atomic.Bool
	mu      sync.Mutex
	samples []time.Duration
}

func (r *recorder) start() {
	r.mu.Lock()
	r.samples = r.samples[:0]
	r.mu.Unlock()
	r.on.Store(true)
}

func (r *recorder) recording() bool { return r.on.Load() }

func (r *recorder) add(ds ...time.Duration) {
	r.mu.Lock()
	for _, d := range ds {
		r.samples = append(r.samples, max(d, 0))
	}
	r.mu.Unlock()
}

func (r *recorder) stop(source string) Latency {
	r.on.Store(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	return summarize(slices.Clone(r.samples), source)
}

// commitLog records when each event of a paced run committed (client side,
// just after COMMIT returned) and when a consumer first saw it.
type commitLog struct {
	base      int64 // first sequence number
	t0        time.Time
	committed []int64 // ns since t0, 0 = not yet
	arrived   []int64
	mu        sync.Mutex
}

func newCommitLog(base int64, n int) *commitLog {
	return &commitLog{base: base, t0: time.Now(), committed: make([]int64, n), arrived: make([]int64, n)}
}

func (c *commitLog) commit(seq int64, at time.Time) {
	if i := seq - c.base; i >= 0 && i < int64(len(c.committed)) {
		c.mu.Lock()
		c.committed[i] = max(at.Sub(c.t0).Nanoseconds(), 1)
		c.mu.Unlock()
	}
}

func (c *commitLog) arrive(seq int64, at time.Time) {
	if i := seq - c.base; i >= 0 && i < int64(len(c.arrived)) {
		c.mu.Lock()
		if c.arrived[i] == 0 {
			c.arrived[i] = max(at.Sub(c.t0).Nanoseconds(), 1)
		}
		c.mu.Unlock()
	}
}

// pending counts committed events not seen yet.
func (c *commitLog) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for i, t := range c.committed {
		if t != 0 && c.arrived[i] == 0 {
			n++
		}
	}
	return n
}

func (c *commitLog) latency() Latency {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s []time.Duration
	missing := 0
	for i, t := range c.committed {
		if t == 0 {
			continue
		}
		if c.arrived[i] == 0 {
			missing++
			continue
		}
		s = append(s, time.Duration(max(c.arrived[i]-t, 0)))
	}
	l := summarize(s, "consumer")
	l.Missing = missing
	return l
}
