package e2e

import (
	"testing"
	"time"

	"github.com/outboxrelay/outbox/internal/testutil"
)

// TestStandbyTakesOver runs two relays on one config, kills the active one
// with kill -9 while writers commit, and measures how long until the standby
// streams. Nothing committed may be lost.
func TestStandbyTakesOver(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	cfg, stream, _ := natsConfig(t, o, "")
	a := startRelay(t, cfg)
	a.waitLog("streaming started", 30*time.Second)
	b := startRelay(t, cfg)
	b.waitLog("relay is standby", 30*time.Second)

	done := make(chan *workload)
	go func() { done <- writeWorkload(t, o, 4, 4000) }()
	time.Sleep(500 * time.Millisecond)
	killed := time.Now()
	a.kill()
	b.waitLog("streaming started", 30*time.Second)
	takeover := time.Since(killed)
	w := <-done
	got := readStream(t, stream, len(w.committed), 2*time.Minute)
	dups := w.check(t, got)
	waitDelivered(t, o, time.Minute)
	if code := b.stop(); code != 0 {
		t.Errorf("standby-turned-active exited %d on SIGTERM", code)
	}
	t.Logf("takeover after kill -9 of the active relay: %s (standby_poll 1s); %d events, none lost, %d duplicates", takeover.Round(time.Millisecond), len(w.committed), dups)
	if takeover > 10*time.Second {
		t.Errorf("takeover took %s, want within 10s", takeover)
	}
}
