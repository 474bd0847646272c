package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/tcpproxy"
	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/sdk"
)

// TestChaos: while writers commit continuously, two relays run on one
// outbox and the test repeatedly kill -9s the active one, restarts
// PostgreSQL once, cuts the network to PostgreSQL and to NATS, and drops the
// slot once. At the end every row of the events table reached JetStream
// (read by an independent consumer), each key's events first arrived in commit
// order, and the duplicates are reported. OUTBOX_CHAOS_SECONDS sets how long
// the faults go on (default 25; `make chaos` runs it longer).
func TestChaos(t *testing.T) {
	t.Parallel()
	secs := 25
	if v, err := strconv.Atoi(os.Getenv("OUTBOX_CHAOS_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	pg := testutil.NewPostgres(t)
	o := testutil.NewOutboxAt(t, pg.URL())
	pgProxy, err := tcpproxy.New(fmt.Sprintf("127.0.0.1:%d", pg.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer pgProxy.Close()
	natsProxy, err := tcpproxy.New(hostOf(t, testutil.NATSURL(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer natsProxy.Close()

	// The relays reach PostgreSQL and NATS through proxies the test can cut.
	relayDSN, _ := url.Parse(pg.URL())
	relayDSN.Host = pgProxy.Addr()
	stream := strings.ToUpper(testutil.RandomName("CHAOS_"))
	prefix := testutil.RandomName("chaos")
	cfgPath := filepath.Join(t.TempDir(), "relay.yaml")
	// A short duplicate window, so that JetStream keeps the duplicates a crash
	// causes and the test can count them.
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`database: {url: '%s', schema: %s, slot: %s, publication: %s, standby_poll: 500ms}
admin: {listen: "off"}
sinks:
  - {name: bus, type: nats, url: 'nats://%s', stream: %s, duplicate_window: 1s, publish_timeout: 2s}
routes:
  - {name: all, match: '*', sink: bus, destination: '%s.{{.AggregateType}}', retry: {max_attempts: 100000, max_interval: 1s}}
`, relayDSN, o.Schema, o.Slot, o.Publication, natsProxy.Addr(), stream, prefix)), 0o600)
	t.Cleanup(func() { deleteStream(t, stream) })

	relays := []*relayProc{startRelay(t, cfgPath), startRelay(t, cfgPath)}
	for start := time.Now(); !strings.Contains(relays[0].out.String()+relays[1].out.String(), "streaming started"); {
		if time.Since(start) > 30*time.Second {
			t.Fatal("no relay streaming after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Writers: each owns its keys and numbers its events per key, so commit
	// order per key is the sequence number order. Failed or ambiguous commits
	// are fine: the table is the truth at the end.
	ctx, stopWriters := context.WithCancel(context.Background())
	pool, err := pgxpool.New(context.Background(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	w, _ := sdk.New(&sdk.Config{Schema: o.Schema})
	var writes, writeErrs atomic.Int64
	var wg sync.WaitGroup
	for wr := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq := map[string]int{}
			for ctx.Err() == nil {
				key := fmt.Sprintf("w%d-k%d", wr, rand.IntN(8))
				seq[key]++
				payload, _ := json.Marshal(map[string]int{"seq": seq[key]})
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					return w.Write(ctx, tx, &sdk.Event{AggregateType: "k", AggregateID: key, EventType: "chaos.made", Payload: payload})
				})
				if err != nil {
					writeErrs.Add(1)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				writes.Add(1)
				time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			}
		}()
	}

	activeRelay := func() *relayProc {
		var holder string
		pool.QueryRow(context.Background(), "SELECT coalesce(holder, '') FROM "+o.Schema+".relay_state WHERE slot = $1", o.Slot).Scan(&holder)
		for _, r := range relays {
			if strings.Contains(holder, fmt.Sprintf(" pid %d ", r.cmd.Process.Pid)) {
				select {
				case <-r.done:
				default:
					return r
				}
			}
		}
		return nil
	}
	faults := map[string]int{}
	pause := func() { time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond) }
	end := time.Now().Add(time.Duration(secs) * time.Second)
	step := 0
	for time.Now().Before(end) {
		pause()
		step++
		switch {
		case step == 4:
			pg.Restart()
			faults["postgres restarted"]++
		case step == 6:
			natsProxy.Cut()
			time.Sleep(3 * time.Second)
			natsProxy.Restore()
			faults["NATS cut 3s"]++
		case step == 8:
			pgProxy.Cut()
			time.Sleep(3 * time.Second)
			pgProxy.Restore()
			faults["PostgreSQL network cut 3s"]++
		case step == 2:
			if dropSlot(t, pool, o.Slot) {
				faults["slot dropped"]++
			}
		default:
			if r := activeRelay(); r != nil {
				r.cmd.Process.Signal(syscall.SIGKILL)
				<-r.done
				for i, x := range relays {
					if x == r {
						relays[i] = startRelay(t, cfgPath)
					}
				}
				faults["active relay kill -9"]++
			}
		}
	}
	stopWriters()
	wg.Wait()

	// Everything in the table must arrive.
	var ids []string
	rows, err := pool.Query(context.Background(), "SELECT id::text FROM "+o.Schema+".events")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	got := readStreamDistinct(t, stream, ids, 3*time.Minute)
	seen := map[string]int{}
	lastSeq := map[string]int{}
	for _, m := range got {
		seen[m.id]++
		if seen[m.id] > 1 {
			continue
		}
		var p struct{ Seq int }
		json.Unmarshal(m.data, &p)
		key := m.headers.Get("ce-subject")
		if p.Seq <= lastSeq[key] {
			t.Errorf("key %s: event seq %d first arrived after seq %d: order per key broken", key, p.Seq, lastSeq[key])
		}
		lastSeq[key] = p.Seq
	}
	missing := 0
	for _, id := range ids {
		if seen[id] == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d committed events never arrived", missing, len(ids))
	}
	dups := len(got) - len(seen)
	var undelivered int
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		pool.QueryRow(context.Background(), "SELECT count(*) FROM "+o.Schema+".events WHERE delivered_at IS NULL").Scan(&undelivered)
		if undelivered == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if undelivered > 0 {
		t.Errorf("%d rows never marked delivered", undelivered)
	}
	t.Logf("chaos for %ds: faults %v; %d events committed (%d writes failed during faults), all %d delivered, %d duplicates",
		secs, faults, len(ids), writeErrs.Load(), len(ids), dups)
	for _, r := range relays {
		select {
		case <-r.done:
		default:
			r.stop()
		}
	}
}

// dropSlot terminates the slot's walsender and drops it (as a failover to a
// replica without the slot would), retrying while a relay grabs it back.
func dropSlot(t *testing.T, pool *pgxpool.Pool, slot string) bool {
	ctx := context.Background()
	for range 50 {
		pool.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", slot)
		if _, err := pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot); err == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Log("could not drop the slot: a relay kept it busy")
	return false
}

// readStreamDistinct reads the whole stream until every id in want has
// arrived or the timeout passes.
func readStreamDistinct(t *testing.T, stream string, want []string, timeout time.Duration) []received {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := readStream(t, stream, 0, 30*time.Second)
		seen := map[string]bool{}
		for _, m := range got {
			seen[m.id] = true
		}
		all := true
		for _, id := range want {
			if !seen[id] {
				all = false
				break
			}
		}
		if all || time.Now().After(deadline) {
			return got
		}
		time.Sleep(time.Second)
	}
}
