package kafka

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/sinktest"
	"github.com/outboxrelay/outbox/sdk/inbox"
)

// The tests run against an in-process kfake cluster, or against the cluster
// OUTBOX_TEST_KAFKA_BROKERS names (comma-separated host:port).
var (
	sharedOnce    sync.Once
	sharedBrokers []string
	sharedCluster *kfake.Cluster
	sharedErr     error

	// privateBrokers maps topics on test-owned clusters to their brokers.
	privateBrokers sync.Map
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedCluster != nil {
		sharedCluster.Close()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func brokers(t testing.TB) []string {
	t.Helper()
	sharedOnce.Do(func() {
		if env := os.Getenv("OUTBOX_TEST_KAFKA_BROKERS"); env != "" {
			sharedBrokers = strings.Split(env, ",")
			return
		}
		sharedCluster, sharedErr = kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(3))
		if sharedErr == nil {
			sharedBrokers = sharedCluster.ListenAddrs()
		}
	})
	if sharedErr != nil {
		t.Fatalf("kfake: %v", sharedErr)
	}
	return sharedBrokers
}

func realCluster() bool { return os.Getenv("OUTBOX_TEST_KAFKA_BROKERS") != "" }

func brokersOf(t testing.TB, topic string) []string {
	if b, ok := privateBrokers.Load(topic); ok {
		return b.([]string)
	}
	return brokers(t)
}

func newSink(t testing.TB, cfg Config) *Sink {
	t.Helper()
	if cfg.Brokers == nil {
		cfg.Brokers = brokers(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// createTopic creates a topic with 3 partitions and the given configs.
func createTopic(t testing.TB, brokers []string, topic string, configs map[string]string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic = topic
	rt.NumPartitions = 3
	rt.ReplicationFactor = -1
	for k, v := range configs {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		rt.Configs = append(rt.Configs, c)
	}
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

func newTopic(t testing.TB) string {
	topic := testutil.RandomName("outbox-test-")
	createTopic(t, brokers(t), topic, nil)
	return topic
}

// consume reads topic from the start with an independent client (franz-go)
// until it has at least min records or ctx is done.
func consume(ctx context.Context, t *testing.T, topic string, min int) []sinktest.Received {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokersOf(t, topic)...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []sinktest.Received
	poll := func(ctx context.Context) bool {
		fs := cl.PollFetches(ctx)
		for _, e := range fs.Errors() {
			if e.Err != context.DeadlineExceeded && e.Err != context.Canceled {
				t.Logf("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
			}
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, received(r)) })
		return ctx.Err() == nil
	}
	for len(got) < min && poll(ctx) {
	}
	// A short look for anything beyond min (duplicates).
	extra, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	for poll(extra) {
	}
	return got
}

func received(r *kgo.Record) sinktest.Received {
	got := sinktest.Received{
		Key:        string(r.Key),
		Payload:    r.Value,
		Attributes: map[string]string{},
		Headers:    map[string]string{},
	}
	for _, h := range r.Headers {
		switch {
		case h.Key == "content-type":
			got.ContentType = string(h.Value)
		case strings.HasPrefix(h.Key, "ce_"):
			got.Attributes[strings.TrimPrefix(h.Key, "ce_")] = string(h.Value)
		default:
			got.Headers[h.Key] = string(h.Value)
		}
	}
	got.ID = got.Attributes["id"]
	hs := make([]inbox.KafkaHeader, len(r.Headers))
	for i, h := range r.Headers {
		hs[i] = inbox.KafkaHeader(h)
	}
	got.Inbox, got.InboxErr = inbox.FromKafka(hs, r.Value)
	return got
}

func TestContract(t *testing.T) {
	smallTopic := testutil.RandomName("outbox-small-")
	createTopic(t, brokers(t), smallTopic, map[string]string{"max.message.bytes": "2048"})
	h := sinktest.Harness{
		New:         func(t *testing.T) sink.Sink { return newSink(t, Config{}) },
		Destination: func(t *testing.T) string { return newTopic(t) },
		Consume:     consume,
		SDKReader:   true,
		Permanent: []sinktest.PermanentCase{
			{Name: "TooLargeForClient", Break: func(t *testing.T, m *sink.Message) {
				m.Event.Payload = make([]byte, 1<<20+1)
			}},
			{Name: "TooLargeForTopic", Break: func(t *testing.T, m *sink.Message) {
				m.Destination = smallTopic
				m.Event.Payload = make([]byte, 4096)
			}},
		},
	}
	if !realCluster() {
		h.Outage = outage
	}
	sinktest.Run(t, h)
}

// outage runs a private kfake cluster that persists to disk, so that it can
// be stopped and started again on the same port with its data.
func outage(t *testing.T) sinktest.Outage {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	topic := testutil.RandomName("outbox-outage-")
	start := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(3, topic))
		if err != nil {
			t.Fatalf("kfake on port %d: %v", port, err)
		}
		return c
	}
	var mu sync.Mutex
	c := start()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if c != nil {
			c.Close()
		}
	})
	addr := []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	privateBrokers.Store(topic, addr)
	return sinktest.Outage{
		Sink:        newSink(t, Config{Brokers: addr, MaxAttempts: 2, DialTimeout: time.Second, WriteTimeout: 2 * time.Second}),
		Destination: topic,
		Cut: func() {
			mu.Lock()
			defer mu.Unlock()
			c.Close()
			c = nil
		},
		Restore: func() {
			mu.Lock()
			defer mu.Unlock()
			c = start()
		},
	}
}
