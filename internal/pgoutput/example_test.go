package pgoutput_test

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxrelay/outbox/internal/pgoutput"
)

// Reading a slot's transactions without routing them, as a benchmark of the
// decode rate does: count the events of each transaction, and confirm each
// transaction's end once counted.
func ExampleStart() {
	ctx := context.Background()
	cfg, err := pgconn.ParseConfig("postgres://localhost/app?replication=database")
	if err != nil {
		panic(err)
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		panic(err)
	}
	defer conn.Close(ctx)
	rd, err := pgoutput.Start(ctx, conn, pgoutput.StartOptions{Slot: "bench", Publication: "outbox_events", Schema: "outbox"})
	if err != nil {
		panic(err)
	}
	var row pgoutput.Row
	events := 0
	for {
		conn.Conn().SetReadDeadline(time.Now().Add(time.Second))
		kind, err := rd.Next(&row)
		switch {
		case pgconn.Timeout(err):
			// Nothing for a second: say where we are, and read on.
		case err != nil:
			panic(err)
		case kind == pgoutput.Begin:
			events = 0
		case kind == pgoutput.Insert:
			events++
		case kind == pgoutput.Commit:
			fmt.Println(rd.Tx().EndLSN, events, "events")
		}
		if err != nil || kind == pgoutput.Commit || kind == pgoutput.StatusRequested {
			if err := rd.Confirm(ctx, rd.Tx().EndLSN); err != nil {
				panic(err)
			}
		}
	}
}
