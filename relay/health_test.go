package relay_test

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/internal/tcpproxy"
	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink/stdout"
)

// TestHealthForgetsErrorAfterRecovery: while the path to PostgreSQL is cut
// the relay's health (what /readyz serves) reports the error; once the relay
// has reconnected and streams again, it reports none.
func TestHealthForgetsErrorAfterRecovery(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	u, err := url.Parse(o.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := tcpproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	u.Host = proxy.Addr()
	cfg, err := relay.ParseConfig(fmt.Appendf(nil, "database: {url: '%s', schema: %s, slot: %s, publication: %s, failover_timeout: 2s}\nsinks: [{name: out, type: stdout}]\ndefault_route: {sink: out, destination: x}\n",
		u, o.Schema, o.Slot, o.Publication), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(cfg, map[string]relay.Sink{"out": stdout.New(io.Discard, stdout.Config{})}, &relay.Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitHealth := func(what string, ok func(relay.Health) bool) relay.Health {
		t.Helper()
		var h relay.Health
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if h = r.Health(ctx); ok(h) {
				return h
			}
		}
		t.Fatalf("health not %s within 60s: %+v", what, h)
		return h
	}
	streaming := func(h relay.Health) bool { return h.Database && h.Active && h.Streaming }
	waitHealth("streaming", streaming)

	proxy.Cut()
	h := waitHealth("reporting the lost connection", func(h relay.Health) bool { return !h.Streaming && h.Error != "" })
	t.Logf("while cut: %+v", h)

	proxy.Restore()
	h = waitHealth("streaming again", streaming)
	if h.Error != "" {
		t.Errorf("the relay streams again, but its health still reports %q", h.Error)
	}
}
