package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/internal/testutil"
)

// peakRSS reads a process's peak resident set size (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM")
}

// relayMemoryBound is the stated bound of the relay's peak RSS on one huge
// transaction with the default delivery.max_pending (docs/architecture.md).
const relayMemoryBound = 150 << 20

// TestHugeTransactionBoundedMemory relays one transaction of
// OUTBOX_TEST_BIGTX_EVENTS (default 1,000,000) events and reports the relay's
// peak RSS, which must stay under the stated bound: the relay streams the
// transaction through its pipeline instead of holding it.
func TestHugeTransactionBoundedMemory(t *testing.T) {
	t.Parallel()
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("OUTBOX_TEST_BIGTX_EVENTS")); err == nil && v > 0 {
		n = v
	}
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	start := time.Now()
	_, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'order', (i % 1000)::text, 'order.created', convert_to('{"order":' || i || ',"note":"' || repeat('x', 200) || '"}', 'UTF8')
		FROM generate_series(1, $1) AS i`, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one transaction of %d events committed in %s", n, time.Since(start).Round(time.Millisecond))

	// The relay is started after the commit: it creates the slot with a
	// snapshot that holds all n rows. A second run below streams them.
	cfgPath := filepath.Join(t.TempDir(), "relay.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`database: {url: '%s', schema: %s, slot: %s, publication: %s}
admin: {listen: "off"}
delivery: {on_delivered: delete}
sinks: [{name: out, type: stdout}]
default_route: {sink: out, destination: "x"}
`, o.DatabaseURL, o.Schema, o.Slot, o.Publication)), 0o600)

	run := func(what string) {
		cmd := exec.Command(plainBin(t), "relay", "--config", cfgPath, "--log-level", "warn")
		errOut := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = nil, errOut // events to /dev/null
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		began := time.Now()
		deadline := began.Add(10 * time.Minute)
		var peak int64
		for {
			if p, err := peakRSS(cmd.Process.Pid); err == nil {
				peak = max(peak, p)
			}
			var left int
			if err := o.Pool.QueryRow(ctx, "SELECT count(*) FROM "+o.Schema+".events").Scan(&left); err != nil {
				t.Fatal(err)
			}
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d events still undelivered after 10 minutes\n%s", what, left, n, errOut.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		elapsed := time.Since(began)
		t.Logf("%s: %d events relayed in %s (%.0f events/s); relay peak RSS %d MiB (bound %d MiB)",
			what, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), peak>>20, relayMemoryBound>>20)
		if peak > relayMemoryBound {
			t.Errorf("%s: relay peak RSS %d MiB, over the stated bound of %d MiB", what, peak>>20, relayMemoryBound>>20)
		}
	}
	run("from the slot's snapshot")

	// Now the slot exists: one more huge transaction arrives through the
	// replication stream.
	if _, err := o.Pool.Exec(ctx, `INSERT INTO `+o.Schema+`.events (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'order', (i % 1000)::text, 'order.created', convert_to('{"order":' || i || ',"note":"' || repeat('x', 200) || '"}', 'UTF8')
		FROM generate_series(1, $1) AS i`, n); err != nil {
		t.Fatal(err)
	}
	run("from the replication stream")
}
