// Package e2e drives the built outbox binary the way a user does: config
// files, migrations, the relay as a child process, kill -9, real brokers.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outbox/internal/testutil"
)

var outboxBin string

// plainBin is the binary built without -race, for tests that measure speed
// or memory; it is built on first use.
var (
	plainBinOnce sync.Once
	plainBinPath string
	plainBinErr  error
)

func plainBin(t *testing.T) string {
	t.Helper()
	plainBinOnce.Do(func() {
		plainBinPath = outboxBin + "-plain"
		out, err := exec.Command("go", "build", "-o", plainBinPath, "../cmd/outbox").CombinedOutput()
		if err != nil {
			plainBinErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if plainBinErr != nil {
		t.Fatalf("building outbox: %v", plainBinErr)
	}
	return plainBinPath
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "outbox-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	outboxBin = filepath.Join(dir, "outbox")
	build := exec.Command("go", "build", "-race", "-o", outboxBin, "../cmd/outbox")
	if os.Getenv("OUTBOX_E2E_NORACE") == "1" {
		build = exec.Command("go", "build", "-o", outboxBin, "../cmd/outbox")
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building outbox:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a child's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is a finished command.
type result struct {
	code           int
	stdout, stderr string
}

// run runs the binary to completion.
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, outboxBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run outbox %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// relayProc is a running `outbox relay`.
type relayProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

func startRelay(t *testing.T, cfgPath string, env ...string) *relayProc {
	t.Helper()
	cmd := exec.Command(outboxBin, "relay", "--config", cfgPath, "--drain-timeout", "10s")
	cmd.Env = append(os.Environ(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start relay: %v", err)
	}
	p := &relayProc{t: t, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("relay output:\n%s", tail(p.out.String(), 60))
		}
	})
	return p
}

// kill sends SIGKILL and waits.
func (p *relayProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and returns the exit code.
func (p *relayProc) stop() int {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("relay did not stop within 30s of SIGTERM")
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *relayProc) waitLog(substr string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.out.String(), substr) {
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("relay exited (%v) before logging %q:\n%s", p.err, substr, tail(p.out.String(), 40))
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("relay did not log %q within %s:\n%s", substr, timeout, tail(p.out.String(), 40))
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// natsConfig writes a relay.yaml for o that sends every event to a fresh
// JetStream stream and returns its path, the stream and the subject prefix.
func natsConfig(t *testing.T, o *testutil.Outbox, extra string) (path, stream, prefix string) {
	t.Helper()
	stream = strings.ToUpper(testutil.RandomName("E2E_"))
	prefix = testutil.RandomName("e2e")
	cfg := natsSinkConfig(o, testutil.NATSURL(t), stream, fmt.Sprintf(`["%s.>"]`, prefix)) + fmt.Sprintf(`routes:
  - name: all
    match: "*"
    sink: bus
    destination: "%s.{{.AggregateType}}.{{.EventType}}"
%s`, prefix, extra)
	path = filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteStream(t, stream) })
	return path, stream, prefix
}

// natsSinkConfig returns the start of a relay.yaml for o, up to its routes:
// the database, no admin server, and one sink "bus" publishing to the
// JetStream stream with subjects (a YAML list). The stream's duplicate window
// is JetStream's minimum, so that a message sent twice shows up twice and the
// tests can count duplicates instead of JetStream hiding them.
func natsSinkConfig(o *testutil.Outbox, natsURL, stream, subjects string) string {
	return fmt.Sprintf(`database:
  url: %s
  schema: %s
  slot: %s
  publication: %s
admin:
  listen: "off"
sinks:
  - name: bus
    type: nats
    url: %s
    stream: %s
    subjects: %s
    duplicate_window: 100ms
`, o.DatabaseURL, o.Schema, o.Slot, o.Publication, natsURL, stream, subjects)
}

func deleteStream(t *testing.T, stream string) {
	nc, err := nats.Connect(testutil.NATSURL(t))
	if err != nil {
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	js.DeleteStream(context.Background(), stream)
}

// received is one message read back from JetStream.
type received struct {
	id      string
	subject string
	headers nats.Header
	data    []byte
}

// readStream reads the whole stream with an ordered consumer, waiting until it
// holds at least want messages (or the timeout passes).
func readStream(t *testing.T, stream string, want int, timeout time.Duration) []received {
	t.Helper()
	nc, err := nats.Connect(testutil.NATSURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		st, err := js.Stream(ctx, stream)
		if err == nil {
			info, err := st.Info(ctx)
			if err == nil && int(info.State.Msgs) >= want {
				break
			}
		}
		select {
		case <-ctx.Done():
			msgs := 0
			if st != nil {
				if info, err := st.Info(context.Background()); err == nil {
					msgs = int(info.State.Msgs)
				}
			}
			t.Fatalf("stream %s has %d messages after %s, want %d", stream, msgs, timeout, want)
		case <-time.After(100 * time.Millisecond):
		}
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []received
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, received{id: m.Headers().Get("Nats-Msg-Id"), subject: m.Subject(), headers: m.Headers(), data: m.Data()})
		}
		if n == 0 {
			break
		}
	}
	return out
}
