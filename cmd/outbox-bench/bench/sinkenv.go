package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
)

// sinkEnv is one sink under test: the broker-side objects the run creates
// and removes (stream, topic, queue, key), the relay.yaml entry, and an
// independent consumer for latency.
type sinkEnv interface {
	name() string
	setup(ctx context.Context) error
	// entry is the relay.yaml sink entry without name, one "key: value" per line.
	entry() string
	typ() string
	destination() string
	// consume calls f with each message's payload and arrival time, from the
	// newest message on, until stop is called. A nil stop and nil error mean
	// the sink has no consumer (null, stdout).
	consume(ctx context.Context, f func(payload []byte, at time.Time)) (stop func(), err error)
	// reset empties what a consumer would otherwise have to read through.
	reset(ctx context.Context) error
	teardown(ctx context.Context) error
	// brokerComms and brokerPid identify the broker's processes for CPU accounting.
	brokerComms() []string
	brokerPid() int
}

// AllSinks are the sinks the benchmark knows, in table order.
var AllSinks = []string{"null", "stdout", "nats", "kafka", "rabbitmq", "redis"}

func newSinkEnv(name, id string, o *Options) (sinkEnv, error) {
	switch name {
	case "null":
		return &plainEnv{n: "null"}, nil
	case "stdout":
		return &plainEnv{n: "stdout"}, nil
	case "nats":
		storage := jetstream.FileStorage
		if o.NATSStorage == "memory" {
			storage = jetstream.MemoryStorage
		}
		return &natsEnv{url: o.NATSURL, stream: "OUTBOX_BENCH_" + strings.ToUpper(id), prefix: "outbox_bench_" + id + ".", storage: storage}, nil
	case "kafka":
		return &kafkaEnv{topic: "outbox-bench-" + id + ".order.created", prefix: "outbox-bench-" + id + ".", partitions: o.KafkaPartitions, self: o.self}, nil
	case "rabbitmq":
		return &rabbitEnv{url: o.AMQPURL, queue: "outbox-bench-" + id + ".order.created", prefix: "outbox-bench-" + id + ".", queueType: o.AMQPQueueType}, nil
	case "redis":
		return &redisEnv{url: o.RedisURL, key: "outbox-bench:" + id + ":order.created", prefix: "outbox-bench:" + id + ":"}, nil
	}
	return nil, fmt.Errorf("unknown sink %q (choose from %s)", name, strings.Join(AllSinks, ", "))
}

// plainEnv is a sink with no broker: null (the relay alone) and stdout
// (written to /dev/null).
type plainEnv struct{ n string }

func (e *plainEnv) name() string                                                     { return e.n }
func (e *plainEnv) setup(context.Context) error                                      { return nil }
func (e *plainEnv) entry() string                                                    { return "" }
func (e *plainEnv) typ() string                                                      { return e.n }
func (e *plainEnv) destination() string                                              { return "bench.{{.EventType}}" }
func (e *plainEnv) reset(context.Context) error                                      { return nil }
func (e *plainEnv) teardown(context.Context) error                                   { return nil }
func (e *plainEnv) brokerComms() []string                                            { return nil }
func (e *plainEnv) brokerPid() int                                                   { return 0 }
func (e *plainEnv) consume(context.Context, func([]byte, time.Time)) (func(), error) { return nil, nil }

// natsEnv is a JetStream stream of its own (file storage unless
// --nats-storage memory, at most 200,000 messages), removed at the end.
type natsEnv struct {
	url, stream, prefix string
	storage             jetstream.StorageType
	nc                  *nats.Conn
	js                  jetstream.JetStream
}

func (e *natsEnv) name() string          { return "nats" }
func (e *natsEnv) typ() string           { return "nats" }
func (e *natsEnv) destination() string   { return e.prefix + "{{.EventType}}" }
func (e *natsEnv) brokerComms() []string { return []string{"nats-server"} }
func (e *natsEnv) brokerPid() int        { return 0 }
func (e *natsEnv) entry() string {
	return fmt.Sprintf("url: %s\nstream: %s\n", e.url, e.stream)
}

func (e *natsEnv) setup(ctx context.Context) error {
	nc, err := nats.Connect(e.url, nats.Name("outbox-bench"))
	if err != nil {
		return fmt.Errorf("nats: connect to %s: %w (start it with scripts/services.sh up, or pass --nats-url)", e.url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	e.nc, e.js = nc, js
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: e.stream, Subjects: []string{e.prefix + ">"}, Storage: e.storage,
		MaxMsgs: 200_000, Discard: jetstream.DiscardOld, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		nc.Close()
		return fmt.Errorf("nats: create stream %s: %w", e.stream, err)
	}
	return nil
}

func (e *natsEnv) consume(ctx context.Context, f func([]byte, time.Time)) (func(), error) {
	c, err := e.js.OrderedConsumer(ctx, e.stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, fmt.Errorf("nats: consumer: %w", err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) { f(m.Data(), time.Now()) })
	if err != nil {
		return nil, fmt.Errorf("nats: consume: %w", err)
	}
	return cc.Stop, nil
}

func (e *natsEnv) reset(context.Context) error { return nil }

func (e *natsEnv) teardown(ctx context.Context) error {
	if e.nc == nil {
		return nil
	}
	defer e.nc.Close()
	if err := e.js.DeleteStream(ctx, e.stream); err != nil {
		return fmt.Errorf("nats: delete stream %s: %w", e.stream, err)
	}
	return nil
}

// kafkaEnv is a kfake broker in a child process with one topic.
type kafkaEnv struct {
	topic, prefix string
	partitions    int
	self          string
	cmd           *exec.Cmd
	addr          string
}

func (e *kafkaEnv) name() string          { return "kafka" }
func (e *kafkaEnv) typ() string           { return "kafka" }
func (e *kafkaEnv) destination() string   { return e.prefix + "{{.EventType}}" }
func (e *kafkaEnv) brokerComms() []string { return nil }
func (e *kafkaEnv) entry() string         { return fmt.Sprintf("brokers: [%q]\n", e.addr) }
func (e *kafkaEnv) reset(context.Context) error {
	return nil
}

func (e *kafkaEnv) brokerPid() int {
	if e.cmd == nil || e.cmd.Process == nil {
		return 0
	}
	return e.cmd.Process.Pid
}

func (e *kafkaEnv) setup(ctx context.Context) error {
	cmd := exec.Command(e.self, "kafka-broker", "--topic", e.topic, "--partitions", fmt.Sprint(e.partitions))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("kafka: start kfake: %w", err)
	}
	e.cmd = cmd
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		e.teardown(ctx)
		return fmt.Errorf("kafka: kfake did not start: %w", err)
	}
	e.addr = strings.TrimSpace(line)
	return nil
}

func (e *kafkaEnv) consume(ctx context.Context, f func([]byte, time.Time)) (func(), error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.addr), kgo.ConsumeTopics(e.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("kafka: consumer: %w", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) { f(r.Value, now) })
		}
	}()
	return func() { cancel(); <-done; cl.Close() }, nil
}

func (e *kafkaEnv) teardown(context.Context) error {
	if e.cmd == nil || e.cmd.Process == nil {
		return nil
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- e.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-done
	}
	e.cmd = nil
	return nil
}

// rabbitEnv is a durable queue of its own (quorum by default, at most
// 200,000 messages, oldest dropped), published to through the default
// exchange and removed at the end.
type rabbitEnv struct {
	url, queue, prefix, queueType string
	conn                          *amqp.Connection
}

func (e *rabbitEnv) name() string          { return "rabbitmq" }
func (e *rabbitEnv) typ() string           { return "rabbitmq" }
func (e *rabbitEnv) destination() string   { return e.prefix + "{{.EventType}}" }
func (e *rabbitEnv) brokerComms() []string { return []string{"beam.smp"} }
func (e *rabbitEnv) brokerPid() int        { return 0 }
func (e *rabbitEnv) entry() string         { return fmt.Sprintf("url: %q\n", e.url) }

func (e *rabbitEnv) setup(context.Context) error {
	conn, err := amqp.Dial(e.url)
	if err != nil {
		return fmt.Errorf("rabbitmq: connect: %w (start it with scripts/services.sh up, or pass --amqp-url)", err)
	}
	e.conn = conn
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	args := amqp.Table{"x-max-length": int64(200_000), "x-overflow": "drop-head"}
	if e.queueType != "" {
		args["x-queue-type"] = e.queueType
	}
	if _, err := ch.QueueDeclare(e.queue, true, false, false, false, args); err != nil {
		return fmt.Errorf("rabbitmq: declare queue %s: %w", e.queue, err)
	}
	return nil
}

func (e *rabbitEnv) consume(_ context.Context, f func([]byte, time.Time)) (func(), error) {
	ch, err := e.conn.Channel()
	if err != nil {
		return nil, err
	}
	ds, err := ch.Consume(e.queue, "outbox-bench", true, false, false, false, nil)
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("rabbitmq: consume: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range ds {
			f(d.Body, time.Now())
		}
	}()
	return func() {
		ch.Cancel("outbox-bench", false)
		<-done
		ch.Close()
	}, nil
}

func (e *rabbitEnv) reset(context.Context) error {
	ch, err := e.conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	_, err = ch.QueuePurge(e.queue, false)
	return err
}

func (e *rabbitEnv) teardown(context.Context) error {
	if e.conn == nil {
		return nil
	}
	defer e.conn.Close()
	ch, err := e.conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if _, err := ch.QueueDelete(e.queue, false, false, false); err != nil {
		return fmt.Errorf("rabbitmq: delete queue %s: %w", e.queue, err)
	}
	return nil
}

// redisEnv is a stream key of its own, trimmed by the sink (max_len), deleted
// at the end.
type redisEnv struct {
	url, key, prefix string
	c                *goredis.Client
}

func (e *redisEnv) name() string          { return "redis" }
func (e *redisEnv) typ() string           { return "redis" }
func (e *redisEnv) destination() string   { return e.prefix + "{{.EventType}}" }
func (e *redisEnv) brokerComms() []string { return []string{"redis-server"} }
func (e *redisEnv) brokerPid() int        { return 0 }
func (e *redisEnv) entry() string         { return fmt.Sprintf("url: %q\nmax_len: 200000\n", e.url) }

func (e *redisEnv) setup(ctx context.Context) error {
	opts, err := goredis.ParseURL(e.url)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	e.c = goredis.NewClient(opts)
	if err := e.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w (start it with scripts/services.sh up, or pass --redis-url)", err)
	}
	return e.c.Del(ctx, e.key).Err()
}

func (e *redisEnv) consume(ctx context.Context, f func([]byte, time.Time)) (func(), error) {
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := "$"
		for cctx.Err() == nil {
			res, err := e.c.XRead(cctx, &goredis.XReadArgs{Streams: []string{e.key, last}, Count: 1000, Block: 200 * time.Millisecond}).Result()
			if err != nil {
				continue
			}
			now := time.Now()
			for _, s := range res {
				for _, m := range s.Messages {
					last = m.ID
					if p, ok := m.Values["payload"].(string); ok {
						f([]byte(p), now)
					}
				}
			}
		}
	}()
	return func() { cancel(); wg.Wait() }, nil
}

func (e *redisEnv) reset(context.Context) error { return nil }

func (e *redisEnv) teardown(ctx context.Context) error {
	if e.c == nil {
		return nil
	}
	defer e.c.Close()
	return e.c.Del(ctx, e.key).Err()
}
