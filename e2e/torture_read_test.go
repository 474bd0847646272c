package e2e

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
)

// This file holds the torture test's independent consumers: each reads one
// broker directly (not through the SDK's inbox adapters) and keeps, per
// message, only what the checks need: route, event id, time attribute and a
// hash of the payload, in the order the broker holds them.

// tMsg is one message read back.
type tMsg struct {
	route   string
	id      string
	time    string
	sum     [32]byte
	plen    int
	hasSum  bool   // false when only canon is known (stdout prints JSON payloads as JSON)
	canon   string // stdout: the payload as canonical JSON
	sink    string
	problem string // why the message could not be read, if it could not
}

func hashed(m tMsg, payload []byte) tMsg {
	m.sum, m.plen, m.hasSum = sha256.Sum256(payload), len(payload), true
	return m
}

// tStdout collects the stdout sink's JSON lines of every relay process, in
// the order the processes ran.
type tStdout struct {
	mu   sync.Mutex
	msgs []tMsg
	torn int // partial last lines of killed relays
}

// lineWriter is one relay process's standard output.
type lineWriter struct {
	c   *tStdout
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := slices.Index(w.buf, '\n')
		if i < 0 {
			break
		}
		w.c.line(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) == 0 && cap(w.buf) > 1<<20 {
		w.buf = nil // let a large line's buffer go
	}
	return len(p), nil
}

// end is called when the process exited: a partial line is a write the
// kill cut short.
func (w *lineWriter) end() {
	if len(w.buf) > 0 {
		w.c.mu.Lock()
		w.c.torn++
		w.c.mu.Unlock()
	}
	w.buf = nil
}

func (c *tStdout) line(b []byte) {
	var l struct {
		ID         string          `json:"id"`
		Time       string          `json:"time"`
		OccurredAt string          `json:"occurredat"`
		Route      string          `json:"route"`
		Data       json.RawMessage `json:"data"`
		DataBase64 []byte          `json:"data_base64"`
	}
	m := tMsg{sink: "stdout"}
	if err := json.Unmarshal(b, &l); err != nil {
		m.problem = fmt.Sprintf("stdout line not JSON (%v): %.200q", err, b)
	} else {
		m.route, m.id, m.time = l.Route, l.ID, cmp.Or(l.Time, l.OccurredAt)
		if l.Data != nil {
			m.canon = canonJSON(l.Data)
		} else {
			m = hashed(m, l.DataBase64)
		}
	}
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
}

func (c *tStdout) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

// readNATS reads the whole stream; the route is the subject's second token.
func readNATS(ctx context.Context, natsURL, stream string) ([]tMsg, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	last := info.State.LastSeq
	var out []tMsg
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return out, err
		}
		n := 0
		var seq uint64
		for msg := range batch.Messages() {
			n++
			md, _ := msg.Metadata()
			if md != nil {
				seq = md.Sequence.Stream
			}
			parts := strings.SplitN(msg.Subject(), ".", 3)
			m := tMsg{sink: "nats", id: msg.Headers().Get("Nats-Msg-Id")}
			if len(parts) >= 2 {
				m.route = parts[1]
			}
			// time, or occurredat where RFC 3339 cannot hold the value.
			raw := cmp.Or(msg.Headers().Get("ce-time"), msg.Headers().Get("ce-occurredat"))
			if tm, err := url.PathUnescape(raw); err == nil {
				m.time = tm
			} else {
				m.time = raw
			}
			out = append(out, hashed(m, msg.Data()))
		}
		if batch.Error() != nil {
			return out, batch.Error()
		}
		if seq >= last || n == 0 {
			return out, nil
		}
	}
}

// readKafka reads every topic from the start until two polls in a row bring
// nothing; records are ordered by partition, then offset.
func readKafka(ctx context.Context, addr string, topics map[string]string) ([]tMsg, error) {
	if len(topics) == 0 {
		return nil, nil
	}
	route := map[string]string{}
	var names []string
	for r, tp := range topics {
		route[tp] = r
		names = append(names, tp)
	}
	kc, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(names...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond), kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(64<<20))
	if err != nil {
		return nil, err
	}
	defer kc.Close()
	type pk struct {
		topic string
		part  int32
	}
	parts := map[pk][]tMsg{}
	empty := 0
	for empty < 3 && ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		fs := kc.PollFetches(pctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			m := tMsg{sink: "kafka", route: route[r.Topic]}
			for _, h := range r.Headers {
				switch h.Key {
				case "ce_id":
					m.id = string(h.Value)
				case "ce_time", "ce_occurredat":
					m.time = string(h.Value)
				}
			}
			parts[pk{r.Topic, r.Partition}] = append(parts[pk{r.Topic, r.Partition}], hashed(m, r.Value))
		})
		if n == 0 {
			empty++
		} else {
			empty = 0
		}
	}
	keys := make([]pk, 0, len(parts))
	for k := range parts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b pk) int {
		if c := strings.Compare(a.topic, b.topic); c != 0 {
			return c
		}
		return int(a.part - b.part)
	})
	var out []tMsg
	for _, k := range keys {
		out = append(out, parts[k]...)
	}
	return out, ctx.Err()
}

// readRedis reads every stream under prefix; the route is the key's part
// after the prefix.
func readRedis(ctx context.Context, opts *goredis.Options, prefix string) ([]tMsg, error) {
	rc := goredis.NewClient(opts)
	defer rc.Close()
	var keys []string
	iter := rc.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, err
	}
	slices.Sort(keys)
	var out []tMsg
	for _, key := range keys {
		route, _, _ := strings.Cut(strings.TrimPrefix(key, prefix+":"), ":")
		start := "-"
		for {
			entries, err := rc.XRangeN(ctx, key, start, "+", 20).Result()
			if err != nil {
				return out, err
			}
			for _, e := range entries {
				m := tMsg{sink: "redis", route: route, id: fmt.Sprint(e.Values["id"]), time: fmt.Sprint(cmp.Or(e.Values["time"], e.Values["occurredat"]))}
				p, _ := e.Values["payload"].(string)
				out = append(out, hashed(m, []byte(p)))
			}
			if len(entries) < 20 {
				break
			}
			start = "(" + entries[len(entries)-1].ID
		}
	}
	return out, nil
}

// readRabbit drains each route's queue.
func readRabbit(amqpURL string, queues map[string]string) ([]tMsg, error) {
	if len(queues) == 0 {
		return nil, nil
	}
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	var routes []string
	for r := range queues {
		routes = append(routes, r)
	}
	slices.Sort(routes)
	var out []tMsg
	for _, r := range routes {
		for {
			d, ok, err := ch.Get(queues[r], true)
			if err != nil {
				return out, err
			}
			if !ok {
				break
			}
			m := tMsg{sink: "rabbit", route: r, id: d.MessageId}
			if v, ok := d.Headers["cloudEvents_time"]; ok {
				m.time = fmt.Sprint(v)
			} else if v, ok := d.Headers["cloudEvents_occurredat"]; ok {
				m.time = fmt.Sprint(v)
			}
			out = append(out, hashed(m, d.Body))
		}
	}
	return out, nil
}
