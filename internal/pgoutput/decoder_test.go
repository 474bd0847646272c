package pgoutput

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/internal/pgoutput/pgoutputtest"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// TestColumnsFollowOutboxschema: the col constants index
// outboxschema.EventColumns.
func TestColumnsFollowOutboxschema(t *testing.T) {
	want := map[int]string{colID: "id", colAggregateType: "aggregate_type", colAggregateID: "aggregate_id", colEventType: "event_type",
		colSchemaVersion: "schema_version", colPayload: "payload", colContentType: "content_type", colHeaders: "headers",
		colTenantID: "tenant_id", colOccurredAt: "occurred_at", colCreatedAt: "created_at"}
	if len(columns) != numCols || len(want) != numCols {
		t.Fatalf("%d columns in outboxschema.EventColumns, %d col constants: add the new column to Row", len(columns), numCols)
	}
	for i, name := range want {
		if columns[i] != name {
			t.Errorf("column %d is %q in outboxschema.EventColumns, %q here", i, columns[i], name)
		}
	}
}

var (
	beginMsg    = pgoutputtest.Begin
	commitMsg   = pgoutputtest.Commit
	relationMsg = pgoutputtest.Relation
)

// TestDecoderReadsTransactions: Begin, Relation, Insert and Commit become a
// transaction of rows of the outbox's table; another table's relation and
// rows are skipped.
func TestDecoderReadsTransactions(t *testing.T) {
	d := NewDecoder("outbox")
	at := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	eventCols := append(outboxschema.ColumnNames(outboxschema.EventColumns), "delivered_at")
	var row Row
	steps := []struct {
		msg  []byte
		want Kind
	}{
		{relationMsg(7, "outbox", "events", eventCols), Skip},
		{relationMsg(8, "public", "orders", []string{"id"}), Foreign},
		{beginMsg(0x100, at), Begin},
		{insertMsg(8, []col{{'t', []byte("1")}}), Skip}, // the other table's row
		{sampleInsert(), Insert},
		{commitMsg(0x100, 0x180), Commit},
		{[]byte{'Y', 0, 0, 0, 1}, Skip}, // a type message
		{nil, Skip},
	}
	for i, s := range steps {
		got, err := d.Decode(s.msg, &row)
		if err != nil || got != s.want {
			t.Fatalf("step %d: kind %d, %v; want %d", i, got, err, s.want)
		}
		switch got {
		case Foreign:
			if d.ForeignTable() != "public.orders" {
				t.Errorf("foreign table %q", d.ForeignTable())
			}
		case Insert:
			if row.EventType != "order.created" || row.CommitLSN != 0x100 || !row.CommitTime.Equal(at) {
				t.Errorf("insert decoded as %+v", row)
			}
		case Commit:
			if tx := d.Tx(); tx.EndLSN != 0x180 || tx.CommitLSN != 0x100 {
				t.Errorf("transaction %+v", tx)
			}
		}
	}
}

// TestDecoderErrors: messages out of place, of a streamed transaction, or
// of a table named like the outbox's without its columns.
func TestDecoderErrors(t *testing.T) {
	eventCols := outboxschema.ColumnNames(outboxschema.EventColumns)
	for name, c := range map[string]struct {
		msgs [][]byte
		want string
		is   error
	}{
		"commit without begin":   {[][]byte{commitMsg(1, 2)}, "commit without begin", nil},
		"insert outside":         {[][]byte{relationMsg(7, "outbox", "events", eventCols), sampleInsert()}, "insert outside a transaction", nil},
		"stream start":           {[][]byte{{'S', 0, 0, 0, 1, 1}}, "streamed transaction", ErrDecode},
		"stream abort":           {[][]byte{{'A', 0, 0, 0, 1, 0, 0, 0, 1}}, "streamed transaction", ErrDecode},
		"not the outbox":         {[][]byte{relationMsg(7, "outbox", "events", []string{"id", "payload"})}, `has no column "aggregate_type"`, ErrNotOutbox},
		"truncated begin":        {[][]byte{{'B', 1, 2}}, "begin", nil},
		"malformed insert in tx": {[][]byte{relationMsg(7, "outbox", "events", eventCols), beginMsg(1, time.Now()), sampleInsert()[:12]}, "truncated", ErrDecode},
	} {
		d := NewDecoder("outbox")
		var row Row
		var err error
		for _, m := range c.msgs {
			if _, err = d.Decode(m, &row); err != nil {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || (c.is != nil && !errors.Is(err, c.is)) {
			t.Errorf("%s: error %v, want one with %q", name, err, c.want)
		}
	}
}

// FuzzDecoder feeds the decoder a relation, a begin, then arbitrary
// messages: it must not panic.
func FuzzDecoder(f *testing.F) {
	f.Add(sampleInsert())
	f.Add(commitMsg(1, 2))
	f.Add([]byte{'R', 0, 0, 0, 7})
	eventCols := outboxschema.ColumnNames(outboxschema.EventColumns)
	f.Fuzz(func(t *testing.T, msg []byte) {
		d := NewDecoder("outbox")
		var row Row
		d.Decode(relationMsg(7, "outbox", "events", eventCols), &row)
		d.Decode(beginMsg(1, time.Now()), &row)
		d.Decode(msg, &row)
	})
}
