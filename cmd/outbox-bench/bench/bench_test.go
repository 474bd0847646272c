package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/relay"
)

func TestPayloadCarriesItsSequence(t *testing.T) {
	l := newLoad(nil, nil, 300, 10, false)
	p := l.payload(123456789)
	if len(p) != 300 {
		t.Errorf("payload is %d bytes, want 300", len(p))
	}
	if seq, ok := parseSeq(p); !ok || seq != 123456789 {
		t.Errorf("parseSeq = %d, %v", seq, ok)
	}
	if _, ok := parseSeq([]byte(`{"other":1}`)); ok {
		t.Error("parseSeq accepted a payload without a sequence")
	}
	e := l.event(15)
	if e.AggregateID != "5" || e.EventType != "order.created" {
		t.Errorf("event %+v", e)
	}
}

func TestSummarize(t *testing.T) {
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	l := summarize(s, "x")
	if l.N != 100 || l.P50 != 50*time.Millisecond || l.P90 != 90*time.Millisecond || l.P99 != 99*time.Millisecond || l.Max != 100*time.Millisecond {
		t.Errorf("summarize = %+v", l)
	}
	if l := summarize(nil, "x"); l.N != 0 {
		t.Errorf("empty summarize = %+v", l)
	}
}

func TestCommitLog(t *testing.T) {
	c := newCommitLog(10, 3)
	t0 := c.t0
	c.commit(10, t0.Add(time.Millisecond))
	c.commit(11, t0.Add(2*time.Millisecond))
	c.arrive(10, t0.Add(5*time.Millisecond))
	c.arrive(99, t0) // not ours
	if n := c.pending(); n != 1 {
		t.Errorf("pending = %d, want 1", n)
	}
	l := c.latency()
	if l.N != 1 || l.Missing != 1 || l.Max != 4*time.Millisecond {
		t.Errorf("latency = %+v", l)
	}
}

func TestTrend(t *testing.T) {
	var s []LagSample
	for i := range 20 {
		s = append(s, LagSample{At: float64(i) / 2, Written: int64(i) * 1000, Delivered: int64(i) * 900})
	}
	ev, _ := trend(s, 10)
	if ev < 199 || ev > 201 { // 100 events per sample, two samples a second
		t.Errorf("trend = %v, want 200 events/s", ev)
	}
}

func TestRelayConfig(t *testing.T) {
	o := &Options{BatchSize: 100, MarkInterval: 10 * time.Millisecond, SinkOptions: map[string][]string{"redis": {"pool_size: 4"}}}
	env, err := newSinkEnv("redis", "abc", &Options{RedisURL: "redis://127.0.0.1:6379/0"})
	if err != nil {
		t.Fatal(err)
	}
	y := relayConfig(o, "postgres://x", "s", "slot", "pub", "127.0.0.1:1", env)
	for _, want := range []string{"batch_size: 100", "mark_interval: 10ms", "type: redis", "pool_size: 4", "max_len: 200000", `destination: "outbox-bench:abc:{{.EventType}}"`} {
		if !strings.Contains(y, want) {
			t.Errorf("relay.yaml lacks %q:\n%s", want, y)
		}
	}
}

func TestNum(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4371: "-4,371"} {
		if got := num(in); got != want {
			t.Errorf("num(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestRelayConfigValidates(t *testing.T) {
	o := &Options{OnDelivered: "mark", BatchSize: 100, BatchesInFlight: 2, MaxPending: 1000, MarkBatch: 500, MarkInterval: 20 * time.Millisecond}
	o.Defaults()
	for _, name := range AllSinks {
		env, err := newSinkEnv(name, "abc", o)
		if err != nil {
			t.Fatal(err)
		}
		if k, ok := env.(*kafkaEnv); ok {
			k.addr = "127.0.0.1:9092"
		}
		src := relayConfig(o, "postgres://x@127.0.0.1/db", "bench_abc", "bench_abc_slot", "bench_abc_pub", "127.0.0.1:9999", env)
		cfg, err := relay.ParseConfig([]byte(src), name+".yaml")
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, src)
		}
		if err := cfg.Validate(AllSinks); err != nil {
			t.Errorf("%s: %v\n%s", name, err, src)
		}
	}
}
