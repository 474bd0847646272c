package e2e

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// demoEnv is the environment of a `make demo` on a throwaway cluster of its
// own: its own services directory and port, and none of the URLs that would
// point the demo at the shared database instead.
func demoEnv(t *testing.T) []string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "DATABASE_URL", "OUTBOX_TEST_DATABASE_URL", "OUTBOX_SERVICES_DIR", "OUTBOX_PG_PORT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "OUTBOX_SERVICES_DIR="+t.TempDir(), "OUTBOX_PG_PORT="+strconv.Itoa(port))
}

// needDemoTools skips (or, under OUTBOX_TEST_REQUIRE_SERVICES=1, fails) when
// the machine lacks what `make demo` needs.
func needDemoTools(t *testing.T) {
	t.Helper()
	var lacking []string
	for _, tool := range []string{"make", "psql"} {
		if _, err := exec.LookPath(tool); err != nil {
			lacking = append(lacking, tool)
		}
	}
	if err := exec.Command("bash", "-c", `command -v initdb || ls /usr/lib/postgresql/*/bin/initdb || [ -x "$(pg_config --bindir)/initdb" ]`).Run(); err != nil {
		lacking = append(lacking, "initdb")
	}
	if len(lacking) == 0 {
		return
	}
	msg := "make demo needs " + strings.Join(lacking, ", ") + " (Debian: apt-get install make postgresql)"
	if os.Getenv("OUTBOX_TEST_REQUIRE_SERVICES") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// shellTrouble matches what a healthy demo never prints: an ERROR log line,
// a shell's own complaints, a Go panic.
var shellTrouble = regexp.MustCompile(`ERROR|FATAL|panic:|No such file or directory|command not found|unbound variable|: line [0-9]+:|Terminated|Killed`)

// TestDemoTwice runs `make demo` twice in a row on a fresh throwaway cluster,
// as a new user would: each run must look healthy (no ERROR line, no stray
// shell error), report the events of that run, and print the database's URL,
// which must connect. Then it follows the README from there: a relay with
// examples/demo/relay.yaml and `go run ./examples/quickstart` (the README's
// SDK snippet) show the new event arriving.
func TestDemoTwice(t *testing.T) {
	t.Parallel()
	needDemoTools(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	env := demoEnv(t)
	t.Cleanup(func() {
		// Stop the test's own cluster (never the shared one: env points elsewhere).
		cmd := exec.Command("scripts/services.sh", "down")
		cmd.Dir, cmd.Env = root, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("scripts/services.sh down: %v\n%s", err, out)
		}
	})

	var url string
	for run := 1; run <= 2; run++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		cmd := exec.CommandContext(ctx, "make", "demo")
		cmd.Dir, cmd.Env = root, env
		start := time.Now()
		b, err := cmd.CombinedOutput()
		cancel()
		out := string(b)
		t.Logf("make demo, run %d: %s", run, time.Since(start).Round(time.Second))
		if err != nil {
			t.Fatalf("make demo, run %d: %v\n%s", run, err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if shellTrouble.MatchString(line) {
				t.Errorf("make demo, run %d printed a line a healthy demo never prints:\n  %s", run, line)
			}
		}
		m := regexp.MustCompile(`this run wrote (\d+) events: (\d+) delivered`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("make demo, run %d: no `this run wrote N events: M delivered` line", run)
		} else if m[1] != "8" || m[2] != "8" {
			t.Errorf("make demo, run %d: %s (want the 8 events of this run, all delivered)", run, m[0])
		}
		url = regexp.MustCompile(`postgres://[^\s'"]+`).FindString(out)
		if url == "" {
			t.Errorf("make demo, run %d printed no postgres:// URL", run)
		}
		if t.Failed() {
			t.Fatalf("make demo, run %d output:\n%s", run, out)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("the URL the demo printed does not connect: %v", err)
	}
	var delivered int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM demo.events WHERE delivered_at IS NOT NULL`).Scan(&delivered)
	conn.Close(ctx)
	if err != nil || delivered != 16 {
		t.Fatalf("demo.events at %s: %d delivered, %v (want 16 from two runs)", url, delivered, err)
	}

	// The README's next steps: a relay with the demo's config, one event
	// written with the SDK snippet, and the event on the relay's stdout.
	env = append(env, "DATABASE_URL="+url)
	relay := exec.Command(filepath.Join(root, "bin", "outbox"), "relay", "--config", "examples/demo/relay.yaml")
	relay.Dir, relay.Env = root, env
	relayOut := &syncBuffer{}
	relay.Stdout, relay.Stderr = relayOut, relayOut
	if err := relay.Start(); err != nil {
		t.Fatalf("start the relay as the README does: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- relay.Wait() }()
	defer func() {
		relay.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			relay.Process.Kill()
			<-done
		}
	}()

	qs := exec.CommandContext(ctx, "go", "run", "./examples/quickstart")
	qs.Dir, qs.Env = root, env
	b, err := qs.CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./examples/quickstart: %v\n%s", err, b)
	}
	id := regexp.MustCompile(`ord-[0-9a-z-]+`).FindString(string(b))
	if id == "" {
		t.Fatalf("go run ./examples/quickstart names no order id:\n%s", b)
	}
	for !strings.Contains(relayOut.String(), `"subject":"`+id+`"`) {
		select {
		case err := <-done:
			t.Fatalf("the relay stopped (%v) before the quickstart's event arrived:\n%s", err, relayOut.String())
		case <-ctx.Done():
			t.Fatalf("the quickstart's event (order %s) never arrived on the relay's stdout:\n%s", id, relayOut.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	sc := bufio.NewScanner(strings.NewReader(relayOut.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "level=ERROR") {
			t.Errorf("the README's relay logged an error: %s", sc.Text())
		}
	}
}

// TestServicesUpSaysWhatIsMissing: on a machine without the brokers,
// `scripts/services.sh up` (so `make test`) stops before any test runs and
// names each missing service with the Debian package that provides it. It
// runs the script in an empty network namespace (nothing answers) with a PATH
// that holds none of the servers.
func TestServicesUpSaysWhatIsMissing(t *testing.T) {
	t.Parallel()
	if out, err := exec.Command("unshare", "-n", "true").CombinedOutput(); err != nil {
		msg := "this test needs unshare -n (util-linux, as root): " + err.Error() + " " + string(out)
		if os.Getenv("OUTBOX_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, tool := range []string{"dirname", "bash"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("unshare", "-n", "env", "-i", "PATH="+bin,
		"OUTBOX_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/outbox", "OUTBOX_PG_PORT=5432",
		"OUTBOX_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5999/",
		filepath.Join(bin, "bash"), "scripts/services.sh", "up")
	cmd.Dir = root
	b, err := cmd.CombinedOutput()
	out := string(b)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("scripts/services.sh up without brokers: %v (want exit 1)\n%s", err, out)
	}
	for _, want := range []string{
		"NATS: nothing answers on 127.0.0.1:4222 and nats-server is not installed",
		"Redis: nothing answers on 127.0.0.1:6379 and redis-server is not installed",
		"RabbitMQ: nothing answers at 127.0.0.1:5999 (OUTBOX_TEST_AMQP_URL)",
		"apt-get install nats-server redis-server ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scripts/services.sh up without brokers does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "rabbitmq-server") {
		t.Errorf("OUTBOX_TEST_AMQP_URL names the RabbitMQ to use, yet the script offers to install one:\n%s", out)
	}
}
