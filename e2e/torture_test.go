package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/tcpproxy"
	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/sdk"
)

// TestTorture is a generative test of the relay's guarantees (SPEC.md section
// 3). From one seed it draws routes (exact, glob, default or drop, a CEL
// filter that errors for some rows, a sink that refuses everything, odd
// destinations, fan-out, a low-retry route) and writers that commit rows by
// plain SQL and by the SDK with edge values (timestamps at -infinity, year 1,
// 2300, infinity; NUL and invalid UTF-8 where PostgreSQL takes them and
// attempts where it must refuse them; empty, odd and large payloads; odd
// aggregate ids; huge and odd header sets; rolled-back transactions), while
// it kills the relay (-9 and SIGTERM), drops its slot, cuts the path to a
// broker, replays dead letters and prunes. Then it checks the invariants
// against the events table, the dead-letter table and independent consumers
// reading each broker, prints what it tried and each invariant with PASS or
// FAIL, and fails on any FAIL.
//
// TORTURE_SECONDS sets how long writers and faults go on (default 15; `make
// torture` runs it for minutes, with one 50 MB payload), TORTURE_SEED replays
// a run's routes, rows and faults (timing differs), TORTURE_SKIP=a,b turns
// edge classes, route kinds, sinks or faults off for diagnosis
// (docs/development.md lists them).
func TestTorture(t *testing.T) {
	t.Parallel()
	o := tortureOptions(t)
	var skipped []string
	for k := range o.skip {
		skipped = append(skipped, k)
	}
	slices.Sort(skipped)
	t.Logf("torture: seed %d (TORTURE_SEED=%d reproduces routes, rows and faults), %ds, skip [%s]", o.seed, o.seed, o.secs, strings.Join(skipped, ","))
	rng := rand.New(rand.NewPCG(o.seed, 0))
	ctx := context.Background()

	ob := testutil.NewOutbox(t)
	world := genWorld(rng, &o, strings.TrimPrefix(ob.Schema, "t_"))

	// Brokers: NATS, Redis and RabbitMQ behind proxies the test can cut,
	// Kafka in process (stopped and started again for a cut).
	natsURL, redisURL, amqpURL := testutil.NATSURL(t), testutil.RedisURL(t), testutil.AMQPURL(t)
	proxies := map[string]*tcpproxy.Proxy{}
	for sink, raw := range map[string]string{"nats": natsURL, "redis": redisURL, "rabbit": amqpURL} {
		if !world.sinks[sink] {
			continue
		}
		p, err := tcpproxy.New(hostOf(t, raw))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		proxies[sink] = p
	}
	kafka := &tKafka{port: freePort(t), dir: t.TempDir()}
	if world.sinks["kafka"] {
		for _, tp := range world.kafkaTopic {
			kafka.topics = append(kafka.topics, tp)
		}
		if err := kafka.start(); err != nil {
			t.Fatalf("kfake: %v", err)
		}
		t.Cleanup(kafka.stop)
	}
	if world.sinks["nats"] {
		t.Cleanup(func() { deleteStream(t, world.natsStream) })
	}
	if len(world.rabbitQ) > 0 {
		conn, err := amqp.Dial(amqpURL)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range world.rabbitQ {
			if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
		}
		conn.Close()
		t.Cleanup(func() {
			if c, err := amqp.Dial(amqpURL); err == nil {
				ch, _ := c.Channel()
				for _, q := range world.rabbitQ {
					ch.QueueDelete(q, false, false, false)
				}
				c.Close()
			}
		})
	}
	redisOpt := redisOpts(t)
	if world.sinks["redis"] {
		t.Cleanup(func() {
			rc := goredis.NewClient(redisOpt)
			defer rc.Close()
			iter := rc.Scan(ctx, 0, world.redisPref+":*", 1000).Iterator()
			for iter.Next(ctx) {
				rc.Del(ctx, iter.Val())
			}
		})
	}
	amqpProxied, _ := url.Parse(amqpURL)
	redisAddr, natsAddr := "", ""
	if p := proxies["rabbit"]; p != nil {
		amqpProxied.Host = p.Addr()
	}
	if p := proxies["redis"]; p != nil {
		redisAddr = p.Addr()
	}
	if p := proxies["nats"]; p != nil {
		natsAddr = p.Addr()
	}
	adminPort := freePort(t)
	cfgPath := filepath.Join(t.TempDir(), "relay.yaml")
	cfgText := world.config(ob.DatabaseURL, ob.Schema, ob.Slot, ob.Publication, adminPort, natsAddr, kafka.addr(), redisAddr, amqpProxied.String())
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := run(t, nil, "config", "check", "--config", cfgPath); res.code != 0 {
		t.Fatalf("config check of the generated relay.yaml exited %d: %s\n%s", res.code, res.stderr, cfgText)
	}

	// Writers: three, each owning its keys. The first writes the one large
	// payload (50 MB in a long run).
	sdkw, err := sdk.New(&sdk.Config{Schema: ob.Schema, MaxPayloadBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	led := newLedger()
	var writers []*tWriter
	for i := range 3 {
		writers = append(writers, newTWriter(i, o.seed, &o, world, ob.Pool, sdkw, ob.Schema, led))
	}
	if o.on("large") {
		writers[0].bigSize = 3 << 20
		if o.long {
			writers[0].bigSize = 50 << 20
		}
		writers[0].bigAt = 20 + rng.IntN(40)
	}
	// A backlog before the first start: the relay delivers it from its
	// first snapshot.
	if o.on("backlog") {
		var wg sync.WaitGroup
		for _, w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.slow = false
				w.run(ctx, 15)
				w.slow = true
			}()
		}
		wg.Wait()
	}

	relays := newTRelays(t, cfgPath)
	relays.start()
	go relays.supervise()
	streaming := waitFileContains(relays, "streaming started", 30*time.Second)

	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(wctx, 0)
		}()
	}
	faults := &tFaults{t: t, rng: rand.New(rand.NewPCG(o.seed, 99)), o: &o, relays: relays, pool: ob.Pool, slot: ob.Slot,
		cfg: cfgPath, proxies: proxies, kafka: kafka, world: world, counts: map[string]int{}}
	start := time.Now()
	end := start.Add(time.Duration(o.secs) * time.Second)
	sched := faults.schedule(0)
	first := len(sched)
	for i := 0; ; i++ {
		time.Sleep(time.Duration(500+faults.rng.IntN(1000)) * time.Millisecond)
		if i >= first && time.Now().After(end) {
			break
		}
		kind := ""
		if i < len(sched) {
			kind = sched[i]
		} else {
			kind = faults.schedule(first + 1)[first]
		}
		faults.inject(kind)
	}
	time.Sleep(time.Second)
	stopWriters()
	wg.Wait()
	writeSecs := time.Since(start)

	// Wait for the relay to finish: every row marked and no replay pending,
	// or no progress for 20 s.
	quiet := waitQuiet(t, ob.Pool, ob.Schema, relays, o.long)

	// Read everything back.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	msgs := map[string][]tMsg{}
	var readErrs []string
	add := func(sink string, ms []tMsg, err error) {
		if err != nil {
			readErrs = append(readErrs, fmt.Sprintf("%s: %v", sink, err))
		}
		for _, m := range ms {
			msgs[m.route] = append(msgs[m.route], m)
		}
	}
	if world.sinks["nats"] {
		ms, err := readNATS(rctx, natsURL, world.natsStream)
		add("nats", ms, err)
	}
	if world.sinks["kafka"] {
		ms, err := readKafka(rctx, kafka.addr(), world.kafkaTopic)
		add("kafka", ms, err)
	}
	if world.sinks["redis"] {
		ms, err := readRedis(rctx, redisOpt, world.redisPref)
		add("redis", ms, err)
	}
	if len(world.rabbitQ) > 0 {
		ms, err := readRabbit(amqpURL, world.rabbitQ)
		add("rabbit", ms, err)
	}
	relays.stdout.mu.Lock()
	add("stdout", slices.Clone(relays.stdout.msgs), nil)
	relays.stdout.mu.Unlock()

	st, err := readState(ctx, ob.Pool, ob.Schema)
	if err != nil {
		t.Fatalf("read the tables: %v", err)
	}
	chk := &tChecks{led: led, world: world, msgs: msgs, st: st, prunes: faults.prunes}
	invs := []*tInv{chk.everyRowHandled(), chk.everyRowMarked(), chk.orderPerKey(), chk.valuesRoundTrip(), chk.routingMatches(), chk.deadLettersExplained()}
	invs = append(invs, checkSlot(t, ob.Pool, ob.Slot, relays))

	// The relay needed no human: it never ended by itself, it is ready at
	// the end without help, and it stops cleanly on SIGTERM.
	human := &tInv{name: "the relay needed no human: it never ended by itself, is ready at the end, exits 0 on SIGTERM"}
	human.checked = 1
	ready := false
	var lastReady readiness
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		r, err := getReadyz(t, adminPort)
		lastReady = r
		if err == nil && r.code == http.StatusOK {
			ready = true
			break
		}
	}
	if !ready {
		human.fail("/readyz is not 200 after the run: %d %s", lastReady.code, strings.TrimSpace(lastReady.body))
	}
	close(relays.stopSup)
	<-relays.supDone
	if relays.running() {
		relays.term()
	}
	for _, e := range relays.selfExits {
		human.fail("%s", e)
	}
	for i, code := range relays.termCodes {
		if code != 0 {
			human.fail("SIGTERM #%d: the relay exited %d, want 0", i+1, code)
		}
	}
	if !streaming {
		human.fail("the first relay did not log \"streaming started\" within 30s of its start")
	}
	if quiet != "" {
		human.info = quiet
	}
	panics := &tInv{name: "no panic, fatal error or data race in the relay's output", checked: len(relays.all)}
	for _, p := range relays.scanLogs() {
		panics.fail("%s", p)
	}
	invs = append(invs, panics, human)

	// The report.
	var b strings.Builder
	fmt.Fprintf(&b, "\n=== torture report: seed %d (TORTURE_SEED=%d), %s of writes and faults, skip [%s]\n", o.seed, o.seed, writeSecs.Round(time.Second), strings.Join(skipped, ","))
	fmt.Fprintf(&b, "routes:\n%s", world.describe())
	led.mu.Lock()
	fmt.Fprintf(&b, "wrote %d transactions (%d rolled back): %d rows committed, %d in rolled-back transactions, %d with an unknown commit outcome\n",
		led.txns, led.rollbacks, len(led.rows), len(led.rolledBack), len(led.ambiguous))
	b.WriteString("edge classes (rows committed / rolled back):\n")
	for _, tg := range led.sortedTags() {
		c := led.tags[tg]
		fmt.Fprintf(&b, "  %-40s %6d / %d\n", tg, c.committed, c.rolledBack)
	}
	b.WriteString("attempts refused at insert, as they must be (counted, not committed):\n")
	for _, k := range sortedKeys(led.refused) {
		fmt.Fprintf(&b, "  %-40s %6d\n", k, led.refused[k])
	}
	for _, k := range sortedKeys(led.accepted) {
		fmt.Fprintf(&b, "  ACCEPTED though it should be refused: %s: %d\n", k, led.accepted[k])
	}
	for i, u := range led.unexpected {
		if i == 5 {
			fmt.Fprintf(&b, "  ... %d unexpected write errors in all\n", len(led.unexpected))
			break
		}
		fmt.Fprintf(&b, "  unexpected write error: %.300s\n", u)
	}
	led.mu.Unlock()
	b.WriteString("faults:\n")
	for _, k := range sortedKeys(faults.counts) {
		if k != "cut" {
			fmt.Fprintf(&b, "  %-40s %6d\n", k, faults.counts[k])
		}
	}
	for _, n := range faults.notes {
		fmt.Fprintf(&b, "  - %s\n", n)
	}
	fmt.Fprintf(&b, "relay processes: %d (stdout lines cut by kill -9: %d)\n", len(relays.all), relays.stdout.torn)
	b.WriteString("per route: rows it takes / messages read back / distinct / duplicates / dead letters:\n")
	takes, dead := map[string]int{}, map[string]int{}
	for _, r := range led.rows {
		for _, rt := range r.routes {
			takes[rt]++
		}
	}
	for _, byRoute := range st.dls {
		for rt := range byRoute {
			dead[rt]++
		}
	}
	for _, r := range world.all() {
		ids := map[string]bool{}
		for _, m := range msgs[r.name] {
			ids[m.id] = true
		}
		fmt.Fprintf(&b, "  %-12s %6d / %6d / %6d / %4d / %d\n", r.name, takes[r.name], len(msgs[r.name]), len(ids), len(msgs[r.name])-len(ids), dead[r.name])
	}
	unrouted := 0
	for _, r := range led.rows {
		if len(r.routes) == 0 {
			unrouted++
		}
	}
	fmt.Fprintf(&b, "  (unrouted rows: %d)\n", unrouted)
	for _, e := range readErrs {
		fmt.Fprintf(&b, "  read error: %s\n", e)
	}
	fmt.Fprintf(&b, "dead letters: %d\n", st.dlCount)
	for _, l := range chk.dlSummary() {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	b.WriteString("invariants:\n")
	var failed []string
	for _, v := range invs {
		verdict := "PASS"
		if v.count > 0 {
			verdict = "FAIL"
			failed = append(failed, v.name)
		}
		fmt.Fprintf(&b, "  %s  %s (%d checked", verdict, v.name, v.checked)
		if v.count > 0 {
			fmt.Fprintf(&b, ", %d violations", v.count)
		}
		b.WriteString(")\n")
		if v.info != "" {
			fmt.Fprintf(&b, "        %s\n", v.info)
		}
		for _, x := range v.viol {
			fmt.Fprintf(&b, "        - %s\n", x)
		}
		if v.count > len(v.viol) {
			fmt.Fprintf(&b, "        ... and %d more\n", v.count-len(v.viol))
		}
	}
	t.Log(b.String())
	if len(readErrs) > 0 {
		t.Errorf("reading the brokers back failed: %v", readErrs)
	}
	if len(failed) > 0 || len(readErrs) > 0 {
		// Keep the relays' logs and config for diagnosis: t.TempDir goes.
		if dir, err := os.MkdirTemp("", fmt.Sprintf("outbox-torture-%d-", o.seed)); err == nil {
			for i, p := range relays.all {
				if b, err := os.ReadFile(p.logPath); err == nil {
					os.WriteFile(filepath.Join(dir, fmt.Sprintf("relay-%d.log", i+1)), b, 0o600)
				}
			}
			os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(cfgText), 0o600)
			t.Logf("relay logs and relay.yaml kept in %s", dir)
		}
	}
	if len(failed) > 0 {
		t.Errorf("torture seed %d: %d invariants failed (rerun with TORTURE_SEED=%d):\n  %s\nrelay log tail:\n%s",
			o.seed, len(failed), o.seed, strings.Join(failed, "\n  "), lastLines(relays.all[len(relays.all)-1].logPath, 15))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// waitFileContains waits until the running relay's log holds substr.
func waitFileContains(r *tRelays, substr string, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		r.mu.Lock()
		p := r.cur
		r.mu.Unlock()
		if b, err := os.ReadFile(p.logPath); err == nil && strings.Contains(string(b), substr) {
			return true
		}
	}
	return false
}

// waitQuiet waits until every row is marked and no replay is pending, or
// nothing moved for 20 s (bounded by a few minutes in all). It returns a
// note saying which.
func waitQuiet(t *testing.T, pool *pgxpool.Pool, schema string, relays *tRelays, long bool) string {
	ctx := context.Background()
	limit := 3 * time.Minute
	if long {
		limit = 8 * time.Minute
	}
	start := time.Now()
	var last [5]int64
	lastMove := time.Now()
	for {
		var s [5]int64
		err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+schema+`.events WHERE delivered_at IS NULL),
			(SELECT count(*) FROM `+schema+`.events WHERE delivered_at IS NOT NULL),
			(SELECT count(*) FROM `+schema+`.dead_letters),
			(SELECT count(*) FROM `+schema+`.dead_letters WHERE replay_status IN ('requested', 'delivering'))`).Scan(&s[0], &s[1], &s[2], &s[3])
		if err != nil {
			t.Logf("waiting for the relay: %v", err)
		}
		s[4] = int64(relays.stdout.count())
		if err == nil && s[0] == 0 && s[3] == 0 {
			return fmt.Sprintf("relay done %s after the writers stopped", time.Since(start).Round(time.Second))
		}
		if s != last {
			last, lastMove = s, time.Now()
		}
		if time.Since(lastMove) > 20*time.Second || time.Since(start) > limit {
			return fmt.Sprintf("gave up waiting %s after the writers stopped: %d rows unmarked, %d replays pending, nothing moved for %s",
				time.Since(start).Round(time.Second), s[0], s[3], time.Since(lastMove).Round(time.Second))
		}
		time.Sleep(time.Second)
	}
}

// checkSlot: once the relay is idle, the slot's confirmed position reaches
// the end of the WAL as it was when the check began (other tests keep
// writing to the same server, so "the end" moves on).
func checkSlot(t *testing.T, pool *pgxpool.Pool, slot string, relays *tRelays) *tInv {
	v := &tInv{name: "the slot's confirmed_flush_lsn reaches pg_current_wal_lsn() once the relay is idle", checked: 1}
	ctx := context.Background()
	var target string
	if err := pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
		v.fail("read pg_current_wal_lsn(): %v", err)
		return v
	}
	var confirmed string
	var lag int64
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		err := pool.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(pg_wal_lsn_diff($2::pg_lsn, confirmed_flush_lsn), -1)::bigint
			FROM pg_replication_slots WHERE slot_name = $1`, slot, target).Scan(&confirmed, &lag)
		if err == nil && confirmed != "" && lag <= 0 {
			v.info = fmt.Sprintf("confirmed %s >= %s", confirmed, target)
			return v
		}
		if err != nil {
			confirmed = "no slot (" + err.Error() + ")"
		}
	}
	v.fail("60s after the relay went idle the slot's confirmed_flush_lsn is %s, %d bytes behind %s (relay running: %v)", confirmed, lag, target, relays.running())
	return v
}
