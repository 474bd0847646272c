package sdk_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/history"
	"github.com/outboxrelay/outbox/sdk/internal/testdb"
)

// payload300 is a 300-byte JSON payload, the size the field notes measured.
var payload300 = []byte(`{"order_id":"` + strings.Repeat("x", 300-26) + `","n":1}`)

func benchEvent() sdk.Event {
	return sdk.Event{AggregateType: "order", AggregateID: "42", EventType: "order.created", Payload: payload300}
}

func benchSetup(b *testing.B) (*testdb.Outbox, *sdk.Writer) {
	ob := testdb.New(b)
	w, err := sdk.New(&sdk.Config{Schema: ob.Schema})
	if err != nil {
		b.Fatal(err)
	}
	return ob, w
}

// inTx runs op b.N times in transactions of up to per ops each.
func inTx(b *testing.B, ob *testdb.Outbox, per int, op func(tx pgx.Tx)) {
	ctx := context.Background()
	conn, err := ob.Pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	b.ResetTimer()
	for done := 0; done < b.N; {
		tx, err := conn.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < per && done < b.N; i++ {
			op(tx)
			done++
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite is one Write (one statement) in an open transaction,
// committed every 1,000 writes.
func BenchmarkWrite(b *testing.B) {
	ob, w := benchSetup(b)
	ctx := context.Background()
	inTx(b, ob, 1000, func(tx pgx.Tx) {
		e := benchEvent()
		if err := w.Write(ctx, tx, &e); err != nil {
			b.Fatal(err)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkWriteTx is a whole business transaction: BEGIN, Write, COMMIT.
func BenchmarkWriteTx(b *testing.B) {
	ob, w := benchSetup(b)
	ctx := context.Background()
	inTx(b, ob, 1, func(tx pgx.Tx) {
		e := benchEvent()
		if err := w.Write(ctx, tx, &e); err != nil {
			b.Fatal(err)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
}

func batch(n int) []sdk.Event {
	events := make([]sdk.Event, n)
	for i := range events {
		events[i] = benchEvent()
		events[i].AggregateID = fmt.Sprint(i % 10)
	}
	return events
}

// BenchmarkWriteBatch100 is one WriteBatch of 100 events (one statement, one
// round trip), committed every 10 batches.
func BenchmarkWriteBatch100(b *testing.B) {
	ob, w := benchSetup(b)
	ctx := context.Background()
	inTx(b, ob, 10, func(tx pgx.Tx) {
		if err := w.WriteBatch(ctx, tx, batch(100)); err != nil {
			b.Fatal(err)
		}
	})
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkWriteBatch100SQL is WriteBatch through database/sql (array
// literals sent as text).
func BenchmarkWriteBatch100SQL(b *testing.B) {
	ob, w := benchSetup(b)
	ctx := context.Background()
	db := stdlib.OpenDBFromPool(ob.Pool)
	defer db.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := w.WriteBatch(ctx, tx, batch(100)); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkBatchAlternatives measures the ways of writing 100 events that
// were considered for WriteBatch, each with a prepared (validated) batch, so
// only the database side differs:
//   - unnest: the chosen one, one INSERT ... SELECT FROM unnest(arrays), one
//     round trip;
//   - pipeline: a pgx.Batch of 100 single-row INSERTs, one round trip but 100
//     statements;
//   - copy: pgx CopyFrom, the binary COPY protocol, three round trips (it
//     describes the table, then waits for the server to accept the COPY).
func BenchmarkBatchAlternatives(b *testing.B) {
	ob, w := benchSetup(b)
	ctx := context.Background()
	table := ob.Schema + ".events"
	cols := []string{"id", "aggregate_type", "aggregate_id", "event_type", "schema_version", "payload", "content_type", "headers", "tenant_id", "occurred_at"}
	prepared := func() []sdk.Event {
		evs, err := w.PrepareBatch(ctx, batch(100))
		if err != nil {
			b.Fatal(err)
		}
		return evs
	}
	b.Run("unnest", func(b *testing.B) {
		inTx(b, ob, 10, func(tx pgx.Tx) {
			if err := w.WriteBatch(ctx, tx, batch(100)); err != nil {
				b.Fatal(err)
			}
		})
		b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("pipeline", func(b *testing.B) {
		q := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
		inTx(b, ob, 10, func(tx pgx.Tx) {
			var pb pgx.Batch
			for _, e := range prepared() {
				pb.Queue(q, e.ID, e.AggregateType, e.AggregateID, e.EventType, e.SchemaVersion, e.Payload, e.ContentType, "{}", nil, e.OccurredAt)
			}
			if err := tx.SendBatch(ctx, &pb).Close(); err != nil {
				b.Fatal(err)
			}
		})
		b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("copy", func(b *testing.B) {
		inTx(b, ob, 10, func(tx pgx.Tx) {
			evs := prepared()
			rows := make([][]any, len(evs))
			for i, e := range evs {
				rows[i] = []any{e.ID, e.AggregateType, e.AggregateID, e.EventType, e.SchemaVersion, e.Payload, e.ContentType, "{}", nil, e.OccurredAt}
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{ob.Schema, "events"}, cols, pgx.CopyFromRows(rows)); err != nil {
				b.Fatal(err)
			}
		})
		b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkHistoryIndexCost is WriteBatch100 with and without the history
// index (history.CreateIndex), to show what that index costs the writers: it
// is why the index is opt-in rather than part of the default migrations.
func BenchmarkHistoryIndexCost(b *testing.B) {
	for _, with := range []bool{true, false} {
		b.Run(map[bool]string{true: "with_index", false: "without_index"}[with], func(b *testing.B) {
			ob, w := benchSetup(b)
			ctx := context.Background()
			if with {
				if err := history.CreateIndex(ctx, ob.Pool, ob.Schema); err != nil {
					b.Fatal(err)
				}
			}
			inTx(b, ob, 10, func(tx pgx.Tx) {
				if err := w.WriteBatch(ctx, tx, batch(100)); err != nil {
					b.Fatal(err)
				}
			})
			b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
