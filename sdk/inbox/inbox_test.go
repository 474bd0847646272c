package inbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/inbox"
	"github.com/outboxrelay/outbox/sdk/internal/exampledb"
	"github.com/outboxrelay/outbox/sdk/internal/testdb"
	"github.com/outboxrelay/outbox/sdk/wire"
)

func TestMain(m *testing.M) { exampledb.Main(m) }

func setup(t *testing.T) (*testdb.Outbox, *inbox.Inbox) {
	t.Helper()
	ob := testdb.New(t)
	ib, err := inbox.New(&inbox.Config{Schema: ob.Schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := ib.Migrate(context.Background(), ob.Pool); err != nil {
		t.Fatal(err)
	}
	return ob, ib
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	ob := testdb.New(t)
	schema := ob.Schema + "_inbox" // a schema that does not exist yet
	t.Cleanup(func() { ob.Pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	ib, _ := inbox.New(&inbox.Config{Schema: schema})
	db := stdlib.OpenDBFromPool(ob.Pool)
	defer db.Close()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				errs[i] = ib.Migrate(context.Background(), ob.Pool)
			} else {
				errs[i] = ib.Migrate(context.Background(), db)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	up, down, err := inbox.SQL(&inbox.Config{Schema: schema})
	if err != nil || up == "" || down == "" {
		t.Fatalf("SQL = %q, %q, %v", up, down, err)
	}
	if _, err := ob.Pool.Exec(context.Background(), down); err != nil {
		t.Fatal(err)
	}
	if err := ib.Migrate(context.Background(), ob.Pool); err != nil {
		t.Fatalf("migrate after down: %v", err)
	}
}

func TestHandle(t *testing.T) {
	t.Parallel()
	ob, ib := setup(t)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	runs := 0
	handle := func(consumer string, fail error) (bool, error) {
		var applied bool
		err := pgx.BeginFunc(ctx, ob.Pool, func(tx pgx.Tx) error {
			var err error
			applied, err = inbox.Handle(ctx, ib, tx, consumer, id, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				return fail
			})
			return err
		})
		return applied, err
	}
	boom := errors.New("boom")
	// A failing handler rolls the inbox row back with its work...
	if applied, err := handle("billing", boom); applied || !errors.Is(err, boom) {
		t.Fatalf("failing handler: applied %v, err %v", applied, err)
	}
	if ok, _ := ib.Processed(ctx, ob.Pool, "billing", id); ok {
		t.Fatal("a failed handling left the event marked processed")
	}
	// ...so the redelivery applies it, once.
	if applied, err := handle("billing", nil); !applied || err != nil {
		t.Fatalf("first success: applied %v, err %v", applied, err)
	}
	if applied, err := handle("billing", nil); applied || err != nil {
		t.Fatalf("duplicate: applied %v, err %v", applied, err)
	}
	// Another consumer has its own record of the same event.
	if applied, err := handle("shipping", nil); !applied || err != nil {
		t.Fatalf("second consumer: applied %v, err %v", applied, err)
	}
	if runs != 3 {
		t.Fatalf("handler ran %d times, want 3", runs)
	}
	if ok, err := ib.Processed(ctx, ob.Pool, "billing", id); !ok || err != nil {
		t.Fatalf("Processed = %v, %v", ok, err)
	}
	// Bad arguments are refused before anything is written.
	if _, err := inbox.Handle(ctx, ib, any(ob.Pool), "", id, func(context.Context, any) error { return nil }); err == nil {
		t.Error("empty consumer accepted")
	}
	if _, err := inbox.Handle(ctx, ib, any(ob.Pool), "c", uuid.Nil, func(context.Context, any) error { return nil }); err == nil {
		t.Error("nil event id accepted")
	}
}

// kafkaMessage is one broker delivery in Kafka's CloudEvents binary form, as
// the relay's Kafka sink writes it (relay/inbox_envelope_test.go checks the
// reader against the relay's own attribute list).
func kafkaMessage(e *sdk.Event) ([]inbox.KafkaHeader, []byte) {
	hs := []inbox.KafkaHeader{
		{Key: wire.KafkaHeader(wire.AttrSpecVersion), Value: []byte(wire.SpecVersion)},
		{Key: wire.KafkaHeader(wire.AttrID), Value: []byte(e.ID.String())},
		{Key: wire.KafkaHeader(wire.AttrSource), Value: []byte("/outbox/test")},
		{Key: wire.KafkaHeader(wire.AttrType), Value: []byte(e.EventType)},
		{Key: wire.KafkaHeader(wire.AttrSubject), Value: []byte(e.AggregateID)},
		{Key: wire.KafkaHeader(wire.AttrTime), Value: []byte(e.OccurredAt.UTC().Format(time.RFC3339Nano))},
		{Key: wire.KafkaHeader(wire.AttrAggregateType), Value: []byte(e.AggregateType)},
		{Key: wire.KafkaHeader(wire.AttrSchemaVersion), Value: []byte(e.SchemaVersion)},
		{Key: "content-type", Value: []byte(e.ContentType)},
	}
	for k, v := range e.Headers {
		hs = append(hs, inbox.KafkaHeader{Key: k, Value: []byte(v)})
	}
	return hs, e.Payload
}

// TestExactlyOnceUnderRedelivery is the inbox's promise: every event is
// delivered twice, both copies at the same moment to different workers (and
// some first deliveries fail and are redelivered), yet each event is applied
// exactly once. Half the workers use pgx, half database/sql.
func TestExactlyOnceUnderRedelivery(t *testing.T) {
	t.Parallel()
	ob, ib := setup(t)
	ctx := context.Background()
	s := ob.Schema
	for _, q := range []string{
		"CREATE TABLE " + s + ".balance (account text PRIMARY KEY, amount bigint NOT NULL)",
		"INSERT INTO " + s + ".balance VALUES ('a', 0)",
		// No unique constraint: a double application would show here.
		"CREATE TABLE " + s + ".applied (event_id uuid NOT NULL, amount bigint NOT NULL)",
	} {
		if _, err := ob.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db := stdlib.OpenDBFromPool(ob.Pool)
	defer db.Close()

	const n = 300
	rng := rand.New(rand.NewPCG(3, 4))
	type delivery struct {
		headers []inbox.KafkaHeader
		value   []byte
		fail    bool // a transient failure of the consumer's work
	}
	var sum int64
	pairs := make([][2]delivery, n)
	for i := range pairs {
		amount := int64(1 + rng.IntN(1000))
		sum += amount
		e := &sdk.Event{ID: uuid.Must(uuid.NewV7()), AggregateType: "account", AggregateID: "a", EventType: "account.credited",
			SchemaVersion: "1.0", Payload: fmt.Appendf(nil, `{"amount":%d}`, amount), ContentType: "application/json", OccurredAt: time.Now()}
		h, v := kafkaMessage(e)
		pairs[i] = [2]delivery{{h, v, false}, {h, v, false}}
		if i%10 == 0 {
			pairs[i][0].fail = true
		}
	}

	var appliedCount, skipped, failed atomic.Int64
	transient := errors.New("transient")
	consume := func(worker int, d delivery) error {
		env, err := inbox.FromKafka(d.headers, d.value)
		if err != nil {
			return err
		}
		work := func(exec func(string, ...any) error) error {
			var p struct{ Amount int64 }
			if err := json.Unmarshal(env.Payload, &p); err != nil {
				return err
			}
			if err := exec("SELECT pg_sleep(0.002)"); err != nil { // widen the race window
				return err
			}
			if err := exec("UPDATE "+s+".balance SET amount = amount + $1 WHERE account = $2", p.Amount, env.AggregateID); err != nil {
				return err
			}
			if d.fail {
				return transient
			}
			return exec("INSERT INTO "+s+".applied VALUES ($1, $2)", env.ID.String(), p.Amount)
		}
		var applied bool
		if worker%2 == 0 {
			err = pgx.BeginFunc(ctx, ob.Pool, func(tx pgx.Tx) error {
				applied, err = inbox.Handle(ctx, ib, tx, "ledger", env.ID, func(ctx context.Context, tx pgx.Tx) error {
					return work(func(q string, args ...any) error { _, err := tx.Exec(ctx, q, args...); return err })
				})
				return err
			})
		} else {
			var tx *sql.Tx
			if tx, err = db.BeginTx(ctx, nil); err != nil {
				return err
			}
			applied, err = inbox.Handle(ctx, ib, tx, "ledger", env.ID, func(ctx context.Context, tx *sql.Tx) error {
				return work(func(q string, args ...any) error { _, err := tx.ExecContext(ctx, q, args...); return err })
			})
			if err != nil {
				tx.Rollback()
			} else {
				err = tx.Commit()
			}
		}
		switch {
		case errors.Is(err, transient):
			failed.Add(1)
			return nil
		case err != nil:
			return err
		case applied:
			appliedCount.Add(1)
		default:
			skipped.Add(1)
		}
		return nil
	}

	// 8 workers; each event's two copies go to two workers at once.
	const workers = 8
	jobs := make(chan [2]delivery)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w += 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pair := range jobs {
				var inner sync.WaitGroup
				for c := range 2 {
					inner.Add(1)
					go func() {
						defer inner.Done()
						if err := consume(w+c, pair[c]); err != nil {
							errc <- err
						}
					}()
				}
				inner.Wait()
			}
		}()
	}
	for _, p := range pairs {
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	// The broker redelivers what failed (the consumer never acked it).
	for _, p := range pairs {
		if p[0].fail {
			d := p[0]
			d.fail = false
			if err := consume(0, d); err != nil {
				t.Fatal(err)
			}
		}
	}

	var rows, distinct, total, balance int64
	if err := ob.Pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT event_id), coalesce(sum(amount), 0) FROM "+s+".applied").Scan(&rows, &distinct, &total); err != nil {
		t.Fatal(err)
	}
	if err := ob.Pool.QueryRow(ctx, "SELECT amount FROM "+s+".balance").Scan(&balance); err != nil {
		t.Fatal(err)
	}
	if rows != n || distinct != n || total != sum || balance != sum {
		t.Fatalf("applied %d rows (%d distinct), sum %d, balance %d; want %d events applied once, sum %d", rows, distinct, total, balance, n, sum)
	}
	if appliedCount.Load() != n {
		t.Fatalf("Handle reported %d applications, want %d", appliedCount.Load(), n)
	}
	// Every event arrived twice; the failing first copies were retried.
	if got := appliedCount.Load() + skipped.Load() + failed.Load(); got != 2*n+int64(n/10) {
		t.Fatalf("%d deliveries handled, want %d", got, 2*n+n/10)
	}
	t.Logf("%d applied, %d duplicates skipped, %d transient failures redelivered", appliedCount.Load(), skipped.Load(), failed.Load())
}

func TestPrune(t *testing.T) {
	t.Parallel()
	ob, ib := setup(t)
	ctx := context.Background()
	for i := range 25 {
		err := pgx.BeginFunc(ctx, ob.Pool, func(tx pgx.Tx) error {
			_, err := inbox.Handle(ctx, ib, tx, "c", uuid.Must(uuid.NewV7()), func(context.Context, pgx.Tx) error { return nil })
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if i < 20 {
			ob.Pool.Exec(ctx, "UPDATE "+ob.Schema+".inbox SET processed_at = now() - interval '2 days' WHERE processed_at > now() - interval '1 hour'")
		}
	}
	n, err := ib.Prune(ctx, ob.Pool, 24*time.Hour, 7)
	if err != nil || n != 20 {
		t.Fatalf("Prune = %d, %v; want 20", n, err)
	}
	var left int
	ob.Pool.QueryRow(ctx, "SELECT count(*) FROM "+ob.Schema+".inbox").Scan(&left)
	if left != 5 {
		t.Fatalf("%d rows left, want 5", left)
	}
}
