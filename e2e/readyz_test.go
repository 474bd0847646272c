package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/internal/tcpproxy"
	"github.com/outboxrelay/outbox/internal/testutil"
)

// readiness is a /readyz answer.
type readiness struct {
	code     int
	Ready    bool     `json:"ready"`
	NotReady []string `json:"not_ready"`
	Health   struct {
		Database  bool            `json:"database"`
		Active    bool            `json:"active"`
		Streaming bool            `json:"streaming"`
		Sinks     map[string]bool `json:"sinks"`
		Error     string          `json:"error"`
	} `json:"health"`
	body string
}

func getReadyz(t *testing.T, port int) (readiness, error) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
	if err != nil {
		return readiness{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return readiness{}, err
	}
	var r readiness
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return r, fmt.Errorf("/readyz Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("/readyz body %q: %v", b, err)
	}
	r.code, r.body = resp.StatusCode, string(b)
	return r, nil
}

// waitReadyz polls /readyz until ok accepts the answer.
func waitReadyz(t *testing.T, p *relayProc, port int, timeout time.Duration, what string, ok func(readiness) bool) readiness {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last readiness
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("relay exited (%v) while waiting for /readyz to be %s", p.err, what)
		default:
		}
		last, lastErr = getReadyz(t, port)
		if lastErr == nil && ok(last) {
			return last
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("/readyz not %s within %s: last answer %d %s (error %v)", what, timeout, last.code, last.body, lastErr)
	return last
}

// TestReadyzFollowsSinkBroker: /readyz answers 200 while the relay streams and
// its NATS sink is connected, 503 naming the sink while the path to NATS is
// cut (the broker seems stopped), and 200 again once it is back; /healthz
// stays 200 throughout.
func TestReadyzFollowsSinkBroker(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	proxy, err := tcpproxy.New(hostOf(t, testutil.NATSURL(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	port := freePort(t)
	stream := strings.ToUpper(testutil.RandomName("READYZ_"))
	prefix := testutil.RandomName("readyz")
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`database: {url: '%s', schema: %s, slot: %s, publication: %s}
admin: {listen: '127.0.0.1:%d'}
sinks:
  - {name: bus, type: nats, url: 'nats://%s', stream: %s, publish_timeout: 2s}
routes:
  - {name: all, match: '*', sink: bus, destination: '%s.{{.EventType}}'}
`, o.DatabaseURL, o.Schema, o.Slot, o.Publication, port, proxy.Addr(), stream, prefix)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteStream(t, stream) })
	p := startRelay(t, cfg)
	p.waitLog("streaming started", 30*time.Second)

	isReady := func(r readiness) bool { return r.code == http.StatusOK && r.Ready && len(r.NotReady) == 0 }
	r := waitReadyz(t, p, port, 30*time.Second, "ready", isReady)
	if !r.Health.Database || !r.Health.Active || !r.Health.Streaming || !r.Health.Sinks["bus"] {
		t.Errorf("ready, but the health says otherwise: %s", r.body)
	}

	proxy.Cut()
	r = waitReadyz(t, p, port, 20*time.Second, "503 naming sink:bus", func(r readiness) bool {
		return r.code == http.StatusServiceUnavailable && !r.Ready && slices.Contains(r.NotReady, "sink:bus")
	})
	if r.Health.Sinks["bus"] {
		t.Errorf("not ready for sink:bus, but health.sinks.bus is true: %s", r.body)
	}
	if slices.Contains(r.NotReady, "database") || !r.Health.Database {
		t.Errorf("only NATS is cut, but /readyz blames the database: %s", r.body)
	}
	checkHealthz(t, port)
	// Still not ready a few seconds later: the sink does not flap back while
	// its broker is unreachable.
	time.Sleep(3 * time.Second)
	if r, err := getReadyz(t, port); err != nil || r.code != http.StatusServiceUnavailable || !slices.Contains(r.NotReady, "sink:bus") {
		t.Errorf("3s into the cut /readyz answered %d %s (%v), want 503 with sink:bus", r.code, r.body, err)
	}

	proxy.Restore()
	waitReadyz(t, p, port, 30*time.Second, "ready again after the broker returned", isReady)
	checkHealthz(t, port)
	if code := p.stop(); code != 0 {
		t.Errorf("relay exited %d", code)
	}
}

func checkHealthz(t *testing.T, port int) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
	if err != nil {
		t.Errorf("/healthz: %v", err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz answered %d, want 200 while the process runs", resp.StatusCode)
	}
}
