package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outboxrelay/outbox/internal/tcpproxy"
	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/sdk"
)

// passwordPostgres starts a private cluster where every role but postgres
// must give its password over TCP (scram-sha-256), so a relay's DSN password
// is really checked. The hba file lives in the shared temp directory, where
// the server's OS user can read it.
func passwordPostgres(t *testing.T) *testutil.Postgres {
	t.Helper()
	f, err := os.CreateTemp("", "outbox-hba-*.conf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(f.Name()) })
	f.WriteString(`local all all trust
host all postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
`)
	f.Close()
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		t.Fatal(err)
	}
	return testutil.NewPostgres(t, fmt.Sprintf("hba_file = '%s'", f.Name()), "password_encryption = 'scram-sha-256'")
}

// startServer runs a private broker process of the test and waits until it
// accepts connections on port; it is killed when the test ends.
func startServer(t *testing.T, port int, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed: %v", name, err)
	}
	cmd := exec.Command(name, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("%s exited:\n%s", name, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections on %d: %v\n%s", name, port, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpBody(t *testing.T, u string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// runUntilExit runs `outbox relay` on cfg until it exits by itself or for at
// most d (then it is stopped), and returns its exit code and whole output.
func runUntilExit(t *testing.T, cfg string, d time.Duration, during func()) (int, string) {
	t.Helper()
	p := startRelay(t, cfg)
	if during != nil {
		during()
	}
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), p.out.String()
	case <-time.After(d):
	}
	code := p.stop()
	return code, p.out.String()
}

// TestSecretsStayOutOfOutput runs the relay at debug level with a DSN
// password that PostgreSQL checks and sink credentials that NATS, Kafka and
// Redis check, makes it deliver, dead-letter and fail (wrong passwords, an
// unknown host, an unparsable DSN, an unreachable OTLP collector with an
// authorization header), and finds none of the secrets in anything it printed
// or served: logs, errors, `outbox config check`, /readyz, /metrics.
func TestSecretsStayOutOfOutput(t *testing.T) {
	t.Parallel()
	secrets := map[string]string{}
	secret := func(name string) string {
		s := testutil.RandomName("Sx" + name)
		secrets[name] = s
		return s
	}
	pgPass, pgWrong := secret("pg"), secret("pgwrong")
	natsPass, natsWrong := secret("nats"), secret("natswrong")
	kafkaPass, kafkaWrong := secret("kafka"), secret("kafkawrong")
	redisPass, redisWrong := secret("redis"), secret("rediswrong")
	amqpPass, otelToken := secret("amqp"), secret("otel")

	// PostgreSQL that checks the relay role's password.
	pg := passwordPostgres(t)
	o := testutil.NewOutboxAt(t, pg.URL())
	ctx := context.Background()
	role := "relay_" + strings.TrimPrefix(o.Schema, "t_")
	for _, q := range []string{
		"CREATE ROLE " + role + " LOGIN REPLICATION PASSWORD '" + pgPass + "'",
		"GRANT USAGE ON SCHEMA " + o.Schema + " TO " + role,
		"GRANT SELECT, UPDATE, DELETE ON " + o.Schema + ".events TO " + role,
		"GRANT SELECT, INSERT, UPDATE ON " + o.Schema + ".dead_letters TO " + role,
		"GRANT SELECT, INSERT, UPDATE ON " + o.Schema + ".relay_state TO " + role,
	} {
		if _, err := o.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	dsn := func(pass, host string) string {
		return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", role, pass, host)
	}
	pgHost := "127.0.0.1:" + strconv.Itoa(pg.Port())

	// Brokers that check the relay's credentials: a private nats-server and
	// redis-server, and an in-process Kafka with SASL/PLAIN.
	natsPort, redisPort, kafkaPort := freePort(t), freePort(t), freePort(t)
	startServer(t, natsPort, "nats-server", "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "-js", "-sd", t.TempDir(),
		"--user", "relay", "--pass", natsPass)
	startServer(t, redisPort, "redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(redisPort),
		"--requirepass", redisPass, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	topic := testutil.RandomName("secrets-")
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(kafkaPort), kfake.SeedTopics(1, topic),
		kfake.EnableSASL(), kfake.Superuser("PLAIN", "relay", kafkaPass))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	// NATS and Redis are reached through proxies the test cuts for a moment,
	// so that the relay logs disconnections and failed attempts.
	natsProxy, err := tcpproxy.New("127.0.0.1:" + strconv.Itoa(natsPort))
	if err != nil {
		t.Fatal(err)
	}
	defer natsProxy.Close()
	redisProxy, err := tcpproxy.New("127.0.0.1:" + strconv.Itoa(redisPort))
	if err != nil {
		t.Fatal(err)
	}
	defer redisProxy.Close()
	amqpURL, err := url.Parse(testutil.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	adminPort := freePort(t)
	type sinks struct{ nats, kafka, redis string }
	good := sinks{
		nats:  fmt.Sprintf("{name: bus, type: nats, url: 'nats://relay:%s@%s', stream: SECRETS, subjects: ['ok.>'], publish_timeout: 2s}", natsPass, natsProxy.Addr()),
		kafka: fmt.Sprintf("{name: log, type: kafka, brokers: ['127.0.0.1:%d'], sasl: {mechanism: plain, username: relay, password: '%s'}, dial_timeout: 2s, write_timeout: 2s}", kafkaPort, kafkaPass),
		redis: fmt.Sprintf("{name: cache, type: redis, url: 'redis://:%s@%s/0', dial_timeout: 1s, read_timeout: 1s, write_timeout: 1s}", redisPass, redisProxy.Addr()),
	}
	write := func(name, dbURL string, s sinks, extraSink, extraRoute string) string {
		body := fmt.Sprintf(`database: {url: '%s', schema: %s, slot: %s, publication: %s}
admin: {listen: '127.0.0.1:%d'}
log: {level: debug}
sinks:
  - %s
  - %s
  - %s
%sroutes:
%s  - {name: poison, match: 'poison.*', sink: bus, destination: 'nostream.{{.EventType}}', retry: {max_attempts: 2, initial_interval: 10ms}}
  - {name: to-nats, match: '*', sink: bus, destination: 'ok.{{.EventType}}', continue: true}
  - {name: to-kafka, match: '*', sink: log, destination: '%s', continue: true}
  - {name: to-redis, match: '*', sink: cache, destination: 'secrets'}
`, dbURL, o.Schema, o.Slot, o.Publication, adminPort, s.nats, s.kafka, s.redis, extraSink, extraRoute, topic)
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	outputs := map[string]string{} // what the relay printed or served, by where it came from
	check := func(what string, args ...string) {
		res := run(t, nil, args...)
		outputs[what] = fmt.Sprintf("exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	// 1. A working relay: it delivers to every sink, dead-letters a poison
	// event, serves /readyz and /metrics, with tracing on and its collector
	// unreachable.
	goodCfg := write("good", dsn(pgPass, pgHost), good, "", "")
	check("config check", "config", "check", "--config", goodCfg)
	check("config check --connect", "config", "check", "--connect", "--config", goodCfg)
	if !strings.Contains(outputs["config check --connect"], "ok (3 sinks") {
		t.Fatalf("the credentials do not work, so the test proves nothing: %s", outputs["config check --connect"])
	}
	p := startRelay(t, goodCfg, "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:"+strconv.Itoa(freePort(t)),
		"OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20"+otelToken, "OTEL_BSP_SCHEDULE_DELAY=100")
	p.waitLog("streaming started", 60*time.Second)
	w, _ := sdk.New(&sdk.Config{Schema: o.Schema})
	emit := func(i int, eventType string) {
		t.Helper()
		tx, err := o.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(ctx, tx, &sdk.Event{AggregateType: "order", AggregateID: strconv.Itoa(i), EventType: eventType, Payload: []byte(`{}`),
			Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, et := range []string{"order.made", "order.paid", "poison.pill", "order.shipped"} {
		emit(i, et)
	}
	waitDelivered(t, o, 60*time.Second)
	admin := "http://127.0.0.1:" + strconv.Itoa(adminPort)

	// Cut NATS and Redis while an event waits: disconnections, failed
	// attempts (logged at debug level), /readyz naming the sinks.
	natsProxy.Cut()
	redisProxy.Cut()
	emit(9, "order.late")
	deadline := time.Now().Add(30 * time.Second)
	for sumMetric(strings.TrimPrefix(httpBody(t, admin+"/metrics"), "200 "), `outbox_events_retried_total{route="to-redis"`) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no retried delivery to Redis within 30s of the cut")
		}
		time.Sleep(100 * time.Millisecond)
	}
	outputs["/readyz, brokers cut"] = httpBody(t, admin+"/readyz")
	if !strings.HasPrefix(outputs["/readyz, brokers cut"], "503 ") {
		t.Errorf("/readyz with NATS and Redis cut: %s, want 503", outputs["/readyz, brokers cut"])
	}
	natsProxy.Restore()
	redisProxy.Restore()
	waitDelivered(t, o, 60*time.Second)
	metrics := strings.TrimPrefix(httpBody(t, admin+"/metrics"), "200 ")
	for route, sink := range map[string]string{"to-nats": "bus", "to-kafka": "log", "to-redis": "cache"} {
		if n := sumMetric(metrics, fmt.Sprintf(`outbox_events_delivered_total{route=%q,sink=%q}`, route, sink)); n != 4 {
			t.Errorf("sink %s: %v events delivered, want 4", sink, n)
		}
	}
	if n := sumMetric(metrics, "outbox_events_dead_lettered_total{"); n != 1 {
		t.Errorf("%v dead letters, want 1 (the poison event)", n)
	}
	outputs["/metrics"] = metrics
	outputs["/readyz"] = httpBody(t, admin+"/readyz")
	outputs["/healthz"] = httpBody(t, admin+"/healthz")
	time.Sleep(time.Second) // an export attempt or two to the missing collector
	if code := p.stop(); code != 0 {
		t.Errorf("relay exited %d", code)
	}
	outputs["relay"] = p.out.String()
	// JSON by default: every line, the OpenTelemetry exporter's errors too.
	for line := range strings.Lines(outputs["relay"]) {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("a log line is not JSON (%v): %s", err, line)
		}
	}
	for _, want := range []string{`"level":"DEBUG"`, "delivery failed, retrying", "sink disconnected", "event dead-lettered", "tracing: exporting spans failed"} {
		if !strings.Contains(outputs["relay"], want) {
			t.Errorf("the relay did not log %s: the test saw less than it should", want)
		}
	}

	// 2. Failures, each with a secret in reach of the error message.
	wrongPG := write("wrong-pg", dsn(pgWrong, pgHost), good, "", "")
	check("config check --connect, wrong database password", "config", "check", "--connect", "--config", wrongPG)
	code, out := runUntilExit(t, wrongPG, 30*time.Second, nil)
	outputs["relay, wrong database password"] = out
	if code != 1 || !strings.Contains(out, "password authentication failed") {
		t.Errorf("wrong database password: exit %d, want 1 naming the failed authentication:\n%s", code, tail(out, 10))
	}

	noHost := write("no-host", dsn(pgPass, "outbox-no-such-host.invalid:5432"), good, "", "")
	code, out = runUntilExit(t, noHost, 4*time.Second, func() {
		time.Sleep(2 * time.Second)
		outputs["/readyz, unknown database host"] = httpBody(t, admin+"/readyz")
		outputs["/metrics, unknown database host"] = httpBody(t, admin+"/metrics")
	})
	outputs["relay, unknown database host"] = out
	if !strings.Contains(out, "outbox-no-such-host.invalid") {
		t.Errorf("unknown database host: the relay's output does not name the host:\n%s", tail(out, 10))
	}
	check("config check --connect, unknown database host", "config", "check", "--connect", "--config", noHost)

	badDSN := write("bad-dsn", dsn(pgPass+"%zz", pgHost), good, "", "")
	check("config check --connect, unparsable DSN", "config", "check", "--connect", "--config", badDSN)
	_, out = runUntilExit(t, badDSN, 3*time.Second, nil)
	outputs["relay, unparsable DSN"] = out

	for _, c := range []struct {
		name string
		s    sinks
		want string
	}{
		{"wrong NATS password", sinks{
			nats:  fmt.Sprintf("{name: bus, type: nats, url: 'nats://127.0.0.1:%d', user: relay, password: '%s', stream: SECRETS, subjects: ['ok.>']}", natsPort, natsWrong),
			kafka: good.kafka, redis: good.redis}, "sink bus"},
		{"wrong Kafka password", sinks{nats: good.nats,
			kafka: fmt.Sprintf("{name: log, type: kafka, brokers: ['127.0.0.1:%d'], sasl: {mechanism: plain, username: relay, password: '%s'}, dial_timeout: 2s}", kafkaPort, kafkaWrong),
			redis: good.redis}, "sink log"},
		{"wrong Redis password", sinks{nats: good.nats, kafka: good.kafka,
			redis: fmt.Sprintf("{name: cache, type: redis, url: 'redis://:%s@127.0.0.1:%d/0', dial_timeout: 2s}", redisWrong, redisPort)}, "sink cache"},
	} {
		path := write(strings.ReplaceAll(c.name, " ", "-"), dsn(pgPass, pgHost), c.s, "", "")
		check("config check --connect, "+c.name, "config", "check", "--connect", "--config", path)
		code, out := runUntilExit(t, path, 30*time.Second, nil)
		outputs["relay, "+c.name] = out
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, want 1 naming %q:\n%s", c.name, code, c.want, tail(out, 10))
		}
	}
	// The user does not exist: the shared broker refuses the login.
	rabbit := write("wrong-rabbitmq", dsn(pgPass, pgHost), good,
		fmt.Sprintf("  - {name: rabbit, type: rabbitmq, url: 'amqp://outbox_nobody:%s@%s/', dial_timeout: 2s}\n", amqpPass, amqpURL.Host),
		"  - {name: to-rabbit, match: 'never.*', sink: rabbit, destination: 'amq.direct/x'}\n")
	check("config check, RabbitMQ credentials", "config", "check", "--config", rabbit)
	check("config check --connect, wrong RabbitMQ login", "config", "check", "--connect", "--config", rabbit)
	code, out = runUntilExit(t, rabbit, 30*time.Second, nil)
	outputs["relay, wrong RabbitMQ login"] = out
	if code != 1 || !strings.Contains(out, "sink rabbit") {
		t.Errorf("wrong RabbitMQ login: exit %d, want 1 naming sink rabbit:\n%s", code, tail(out, 10))
	}

	for what, text := range outputs {
		for name, s := range secrets {
			if i := strings.Index(text, s); i >= 0 {
				t.Errorf("%s shows the %s secret: ...%s...", what, name, text[max(0, i-200):min(len(text), i+len(s)+50)])
			}
		}
	}
	if t.Failed() {
		for what, text := range outputs {
			t.Logf("--- %s:\n%s", what, tail(text, 15))
		}
	}
}
