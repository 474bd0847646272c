package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outboxrelay/outbox/internal/tcpproxy"
	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/sdk/inbox"
)

// brokers is one test's set of destinations on all four brokers, each behind
// something the test can cut: TCP proxies for NATS, RabbitMQ and Redis, and a
// private kfake cluster (persisting to disk) that is closed and started again
// on the same port.
type brokers struct {
	t                      *testing.T
	natsProxy, amqpProxy   *tcpproxy.Proxy
	redisProxy             *tcpproxy.Proxy
	kafkaPort              int
	kafkaDir               string
	kafkaMu                sync.Mutex
	kafka                  *kfake.Cluster
	topic, queue, rstream  string
	natsStream, natsPrefix string
	adminPort              int
}

func hostOf(t *testing.T, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func newBrokers(t *testing.T) *brokers {
	t.Helper()
	b := &brokers{t: t, topic: testutil.RandomName("e2e-orders-"), queue: testutil.RandomName("e2e-orders-"),
		rstream: testutil.RandomName("e2e-orders:"), natsStream: strings.ToUpper(testutil.RandomName("E2EB_")), natsPrefix: testutil.RandomName("e2eb")}
	var err error
	for _, p := range []struct {
		dst **tcpproxy.Proxy
		raw string
	}{{&b.natsProxy, testutil.NATSURL(t)}, {&b.amqpProxy, testutil.AMQPURL(t)}, {&b.redisProxy, testutil.RedisURL(t)}} {
		if *p.dst, err = tcpproxy.New(hostOf(t, p.raw)); err != nil {
			t.Fatal(err)
		}
		proxy := *p.dst
		t.Cleanup(func() { proxy.Close() })
	}
	b.kafkaPort, b.adminPort, b.kafkaDir = freePort(t), freePort(t), t.TempDir()
	b.startKafka()
	t.Cleanup(func() { b.stopKafka() })

	conn, err := amqp.Dial(testutil.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclare(b.queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := amqp.Dial(testutil.AMQPURL(t)); err == nil {
			ch, _ := c.Channel()
			ch.QueueDelete(b.queue, false, false, false)
			c.Close()
		}
		rc := goredis.NewClient(redisOpts(t))
		rc.Del(context.Background(), b.rstream)
		rc.Close()
	})
	return b
}

func redisOpts(t *testing.T) *goredis.Options {
	o, err := goredis.ParseURL(testutil.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (b *brokers) startKafka() {
	b.kafkaMu.Lock()
	defer b.kafkaMu.Unlock()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(b.kafkaPort), kfake.DataDir(b.kafkaDir), kfake.SeedTopics(3, b.topic))
	if err != nil {
		b.t.Fatalf("kfake: %v", err)
	}
	b.kafka = c
}

func (b *brokers) stopKafka() {
	b.kafkaMu.Lock()
	defer b.kafkaMu.Unlock()
	if b.kafka != nil {
		b.kafka.Close()
		b.kafka = nil
	}
}

func (b *brokers) kafkaAddr() string { return "127.0.0.1:" + strconv.Itoa(b.kafkaPort) }

// config writes a relay.yaml that fans every order.* event out to all four
// brokers and sends poison.* events to an unroutable RabbitMQ destination.
func (b *brokers) config(o *testutil.Outbox) string {
	amqpURL, _ := url.Parse(testutil.AMQPURL(b.t))
	amqpURL.Host = b.amqpProxy.Addr()
	redisURL, _ := url.Parse(testutil.RedisURL(b.t))
	redisURL.Host = b.redisProxy.Addr()
	retry := "retry: {max_attempts: 1000, initial_interval: 100ms, max_interval: 1s}"
	cfg := fmt.Sprintf(`database: {url: '%s', schema: %s, slot: %s, publication: %s}
admin: {listen: '127.0.0.1:%d'}
source: /e2e
sinks:
  - {name: bus, type: nats, url: 'nats://%s', stream: %s, publish_timeout: 2s}
  - {name: log, type: kafka, brokers: ['%s'], dial_timeout: 1s, write_timeout: 2s, max_attempts: 1}
  - {name: rabbit, type: rabbitmq, url: '%s', confirm_timeout: 3s, dial_timeout: 1s}
  - {name: cache, type: redis, url: '%s', dial_timeout: 1s, read_timeout: 2s, write_timeout: 2s}
routes:
  - {name: to-nats, match: 'order.*', sink: bus, destination: '%s.{{.EventType}}', continue: true, %s}
  - {name: to-kafka, match: 'order.*', sink: log, destination: '%s', continue: true, %s}
  - {name: to-rabbit, match: 'order.*', sink: rabbit, destination: '/%s', continue: true, %s}
  - {name: to-redis, match: 'order.*', sink: cache, destination: '%s', %s}
  - {name: poison, match: 'poison.*', sink: rabbit, destination: 'amq.direct/nobody-binds-this', %s}
default_route: {drop: true}
`, o.DatabaseURL, o.Schema, o.Slot, o.Publication, b.adminPort, b.natsProxy.Addr(), b.natsStream, b.kafkaAddr(), amqpURL, redisURL,
		b.natsPrefix, retry, b.topic, retry, b.queue, retry, b.rstream, retry, retry)
	path := filepath.Join(b.t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.t.Fatal(err)
	}
	return path
}

// readAll reads every message of the test from the four brokers, as
// envelopes decoded by the SDK's inbox adapters, keyed by route.
func (b *brokers) readAll(want map[string]int, timeout time.Duration) map[string][]inbox.Envelope {
	t := b.t
	out := map[string][]inbox.Envelope{}
	deadline := time.Now().Add(timeout)
	ctx := context.Background()

	for _, m := range readStream(t, b.natsStream, want["to-nats"], timeout) {
		env, err := inbox.FromNATS(m.headers, m.data)
		if err != nil {
			t.Fatalf("NATS message: %v", err)
		}
		out["to-nats"] = append(out["to-nats"], env)
	}

	kc, err := kgo.NewClient(kgo.SeedBrokers(b.kafkaAddr()), kgo.ConsumeTopics(b.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	kdistinct := map[string]bool{}
	for len(kdistinct) < want["to-kafka"] && time.Now().Before(deadline) {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		kc.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			var hs []inbox.KafkaHeader
			for _, h := range r.Headers {
				hs = append(hs, inbox.KafkaHeader{Key: h.Key, Value: h.Value})
			}
			env, err := inbox.FromKafka(hs, r.Value)
			if err != nil {
				t.Errorf("Kafka record: %v", err)
			}
			if string(r.Key) != env.AggregateType+":"+env.AggregateID {
				t.Errorf("Kafka record key %q, want the ordering key", r.Key)
			}
			out["to-kafka"] = append(out["to-kafka"], env)
			kdistinct[env.ID.String()] = true
		})
		cancel()
	}
	kc.Close()

	conn, err := amqp.Dial(testutil.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := conn.Channel()
	distinct := map[string]bool{}
	for len(distinct) < want["to-rabbit"] && time.Now().Before(deadline) {
		d, ok, err := ch.Get(b.queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		env, err := inbox.FromAMQP(inbox.AMQPMessage{Headers: d.Headers, ContentType: d.ContentType, MessageID: d.MessageId, Body: d.Body})
		if err != nil {
			t.Fatalf("AMQP message: %v", err)
		}
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("AMQP delivery mode %d, want persistent", d.DeliveryMode)
		}
		out["to-rabbit"] = append(out["to-rabbit"], env)
		distinct[env.ID.String()] = true
	}
	conn.Close()

	rc := goredis.NewClient(redisOpts(t))
	defer rc.Close()
	for time.Now().Before(deadline) {
		entries, err := rc.XRange(ctx, b.rstream, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		rdistinct := map[string]bool{}
		for _, e := range entries {
			rdistinct[fmt.Sprint(e.Values["id"])] = true
		}
		if len(rdistinct) >= want["to-redis"] || time.Now().After(deadline) {
			out["to-redis"] = nil
			for _, e := range entries {
				env, err := inbox.FromRedis(e.Values)
				if err != nil {
					t.Fatalf("Redis entry: %v", err)
				}
				out["to-redis"] = append(out["to-redis"], env)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out
}

// checkRoute verifies one route's arrivals against the committed events:
// every one present, in commit order per key (first arrivals), and the
// envelope intact. It returns the number of duplicates.
func checkRoute(t *testing.T, route string, got []inbox.Envelope, w *workload, exactlyOnce bool) int {
	t.Helper()
	seen := map[string]bool{}
	arrival := map[string][]string{}
	dups := 0
	for _, env := range got {
		id := env.ID.String()
		if !w.committed[id] {
			t.Fatalf("%s: unexpected event %s (%s)", route, id, env.EventType)
		}
		if env.Source != "/e2e" || env.EventType != "order.updated" || env.AggregateType != "order" || env.SchemaVersion != "1.0" ||
			env.ContentType != "application/json" || env.OccurredAt.IsZero() || len(env.Payload) == 0 {
			t.Fatalf("%s: envelope of %s not intact: %+v", route, id, env)
		}
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		key := "order:" + env.AggregateID
		arrival[key] = append(arrival[key], id)
	}
	if len(seen) != len(w.committed) {
		t.Fatalf("%s: %d distinct events arrived, %d committed", route, len(seen), len(w.committed))
	}
	for key, want := range w.perKey {
		if strings.Join(arrival[key], ",") != strings.Join(want, ",") {
			t.Fatalf("%s: key %s arrived out of commit order", route, key)
		}
	}
	if exactlyOnce && dups > 0 {
		t.Errorf("%s: %d duplicates without any fault", route, dups)
	}
	return dups
}

func metricsOf(t *testing.T, port int) string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func sumMetric(body, prefix string) float64 {
	var total float64
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += v
		}
	}
	return total
}

func TestFanOutToAllBrokers(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	b := newBrokers(t)
	relay := startRelay(t, b.config(o))
	relay.waitLog("streaming started", 30*time.Second)
	ctx := context.Background()

	w := writeWorkload(t, o, 4, 1000)
	// Poison: unroutable in RabbitMQ, while other keys keep flowing; and an
	// event too large for Kafka and NATS (1 MiB limits) but fine for the
	// others: each route fails or succeeds on its own.
	if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('poison', 'p1', 'poison.unroutable', '\x7b7d')`); err != nil {
		t.Fatal(err)
	}
	var bigID string
	if err := o.Pool.QueryRow(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('big', 'b1', 'order.updated', convert_to('{"x":"' || repeat('x', 2100000) || '"}', 'UTF8')) RETURNING id::text`).Scan(&bigID); err != nil {
		t.Fatal(err)
	}
	w2 := writeWorkloadTagged(t, o, 2, 200, "v") // keeps flowing after the poison
	for id := range w2.committed {
		w.committed[id] = true
	}
	for k, ids := range w2.perKey {
		w.perKey[k] = ids
	}
	w.committed[bigID] = true
	n := len(w.committed)
	// the big event misses two of four brokers
	got := b.readAll(map[string]int{"to-nats": n - 1, "to-kafka": n - 1, "to-rabbit": n, "to-redis": n}, 2*time.Minute)
	for _, route := range []string{"to-nats", "to-kafka", "to-rabbit", "to-redis"} {
		var filtered []inbox.Envelope
		sawBig := false
		for _, env := range got[route] {
			if env.ID.String() == bigID {
				sawBig = true
				continue
			}
			filtered = append(filtered, env)
		}
		tooBig := route == "to-nats" || route == "to-kafka"
		if sawBig == tooBig {
			t.Errorf("%s: big event arrived = %v", route, sawBig)
		}
		delete(w.committed, bigID)
		checkRoute(t, route, filtered, w, true)
		w.committed[bigID] = true
	}
	waitDelivered(t, o, 30*time.Second)
	rows, err := o.Pool.Query(ctx, `SELECT route, attempts, last_error FROM `+o.Schema+`.dead_letters ORDER BY route`)
	if err != nil {
		t.Fatal(err)
	}
	var dead []string
	for rows.Next() {
		var route, last string
		var attempts int
		rows.Scan(&route, &attempts, &last)
		dead = append(dead, route)
		if attempts != 1 {
			t.Errorf("dead letter on %s after %d attempts, want 1 (permanent): %s", route, attempts, last)
		}
		t.Logf("dead letter: route %s: %s", route, last)
	}
	if got := strings.Join(dead, ","); got != "poison,to-kafka,to-nats" {
		t.Errorf("dead letters on routes %q, want poison,to-kafka,to-nats", got)
	}
	relay.stop()
}

func TestBrokersDownTwentySeconds(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	b := newBrokers(t)
	relay := startRelay(t, b.config(o))
	relay.waitLog("streaming started", 30*time.Second)

	done := make(chan *workload)
	go func() { done <- writeWorkload(t, o, 2, 1500) }()
	time.Sleep(300 * time.Millisecond)
	b.natsProxy.Cut()
	b.amqpProxy.Cut()
	b.redisProxy.Cut()
	b.stopKafka()
	t.Log("all four brokers unreachable for 20s")
	time.Sleep(20 * time.Second)
	b.natsProxy.Restore()
	b.amqpProxy.Restore()
	b.redisProxy.Restore()
	b.startKafka()
	w := <-done
	n := len(w.committed)
	got := b.readAll(map[string]int{"to-nats": n, "to-kafka": n, "to-rabbit": n, "to-redis": n}, 3*time.Minute)
	for _, route := range []string{"to-nats", "to-kafka", "to-rabbit", "to-redis"} {
		dups := checkRoute(t, route, got[route], w, false)
		t.Logf("%s: %d events, none lost, %d duplicates after the outage", route, len(w.committed), dups)
	}
	waitDelivered(t, o, time.Minute)
	body := metricsOf(t, b.adminPort)
	for _, route := range []string{"to-nats", "to-kafka", "to-rabbit", "to-redis"} {
		if r := sumMetric(body, `outbox_events_retried_total{route="`+route+`"`); r == 0 {
			t.Errorf("no retries counted for %s across a 20s outage", route)
		}
	}
	var dead int
	o.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+o.Schema+".dead_letters").Scan(&dead)
	if dead != 0 {
		t.Errorf("%d events dead-lettered by a transient outage", dead)
	}
	relay.stop()
}
