package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// rawDecode reads n inserts from slot with the relay's plugin options
// (pgoutput protocol 1, binary) and does nothing with them but confirm: the
// rate at which this PostgreSQL decodes and streams the outbox, the ceiling
// of any relay. It returns the time from the first insert to the n-th.
func rawDecode(ctx context.Context, dbURL, slot, publication string, n int64) (time.Duration, error) {
	cfg, err := pgconn.ParseConfig(dbURL)
	if err != nil {
		return 0, err
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "outbox-bench-raw"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("replication connection: %w", err)
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: []string{
		"proto_version '1'", fmt.Sprintf("publication_names '%s'", publication), "binary 'true'",
	}})
	if err != nil {
		return 0, fmt.Errorf("start replication: %w", err)
	}
	var (
		seen       int64
		first      time.Time
		last       pglogrepl.LSN
		nextStatus = time.Now().Add(time.Second)
	)
	deadline := time.Now().Add(10 * time.Minute)
	for seen < n {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("raw decode: %d of %d inserts after 10 minutes", seen, n)
		}
		if time.Now().After(nextStatus) {
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: last}); err != nil {
				return 0, err
			}
			nextStatus = time.Now().Add(time.Second)
		}
		rctx, cancel := context.WithDeadline(ctx, nextStatus)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				continue
			}
			return 0, fmt.Errorf("raw decode: %w", err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			if e, isErr := msg.(*pgproto3.ErrorResponse); isErr {
				return 0, pgconn.ErrorResponseToPgError(e)
			}
			continue
		}
		if len(cd.Data) == 0 {
			continue
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			if err == nil && pkm.ReplyRequested {
				nextStatus = time.Time{}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil {
				return 0, err
			}
			if len(xld.WALData) > 0 && xld.WALData[0] == 'I' {
				if seen == 0 {
					first = time.Now()
				}
				seen++
			}
			last = xld.WALStart
		}
	}
	if first.IsZero() {
		return 0, errors.New("raw decode: no inserts")
	}
	return time.Since(first), nil
}
