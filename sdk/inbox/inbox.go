// Package inbox makes event consumers idempotent, and reads outbox events back
// from the broker messages the relay publishes.
//
// Delivery is at-least-once: after a crash or an ambiguous broker error a
// consumer may receive an event twice. [Handle] records the event id in the
// consumer's own database, in the same transaction as the consumer's work, so
// each event is applied exactly once per consumer: a redelivered (or
// concurrently delivered) event finds its row and is skipped. Duplicates are
// resolved by the table's primary key, never by timing: a second transaction
// inserting the same id waits for the first and then skips, or proceeds if
// the first rolled back.
//
// The adapters ([FromKafka], [FromNATS], [FromAMQP], [FromRedis]) turn a
// received message into an [Envelope] without importing any broker client:
// they take the header maps and fields those clients expose.
package inbox

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/google/uuid"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/internal/dbx"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// Table is the inbox table's name inside the configured schema.
const Table = "inbox"

// Config configures an Inbox. A nil *Config means all defaults.
type Config struct {
	// Schema holds the inbox table, in the consumer's database. Defaults
	// to "outbox".
	Schema string
}

// Inbox records which events each consumer has processed.
type Inbox struct {
	schema string
	insert string
}

// New returns an Inbox, or an error naming the invalid Config field.
func New(cfg *Config) (*Inbox, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.Schema = cmp.Or(c.Schema, "outbox")
	if err := outboxschema.ValidateName("Schema", c.Schema); err != nil {
		return nil, fmt.Errorf("inbox: config: %w", err)
	}
	return &Inbox{
		schema: c.Schema,
		insert: "INSERT INTO " + outboxschema.Quote(c.Schema) + "." + Table + " (consumer, event_id) VALUES ($1, $2::uuid) ON CONFLICT DO NOTHING",
	}, nil
}

// SQL returns the statements that create the inbox table (up) and drop it
// (down), for `outbox migrate` or another migration tool. Up is idempotent.
func SQL(cfg *Config) (up, down string, err error) {
	ib, err := New(cfg)
	if err != nil {
		return "", "", err
	}
	s := outboxschema.Quote(ib.schema)
	h := fnv.New64a()
	h.Write([]byte("outbox.inbox." + ib.schema))
	up = fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d);
CREATE SCHEMA IF NOT EXISTS %[2]s;
CREATE TABLE IF NOT EXISTS %[2]s.%[3]s (
  consumer     text        NOT NULL CHECK (consumer <> ''),
  event_id     uuid        NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS %[3]s_processed_at_idx ON %[2]s.%[3]s (processed_at);
`, int64(h.Sum64()>>1), s, Table)
	down = fmt.Sprintf("DROP TABLE IF EXISTS %s.%s;\n", s, Table)
	return up, down, nil
}

// Migrate creates the inbox table if it does not exist. db is a pgx or
// database/sql handle; the statements run as one implicit transaction under an
// advisory lock, so two consumers starting at once are safe.
func (ib *Inbox) Migrate(ctx context.Context, db sdk.Tx) error {
	up, _, err := SQL(&Config{Schema: ib.schema})
	if err != nil {
		return err
	}
	if _, err := dbx.Exec(ctx, db, up); err != nil {
		return fmt.Errorf("inbox: migrate: %w", err)
	}
	return nil
}

// Handle runs fn for the event eventID in the consumer's transaction tx, unless
// consumer has already processed that event, and reports whether fn ran.
//
// It inserts (consumer, eventID) into the inbox table with ON CONFLICT DO
// NOTHING; only when the row is new does fn run. Commit tx when Handle returns
// a nil error (applied or not) and acknowledge the message after the commit;
// roll tx back on an error, which removes the inbox row with the rest of the
// work, so a redelivery runs fn again. A second transaction handling the same
// event at the same time blocks on the row until the first ends.
//
// tx is a pgx.Tx or *sql.Tx (anything sdk accepts); fn receives it back with
// its own type.
func Handle[T sdk.Tx](ctx context.Context, ib *Inbox, tx T, consumer string, eventID uuid.UUID, fn func(ctx context.Context, tx T) error) (applied bool, err error) {
	if consumer == "" {
		return false, fmt.Errorf("inbox: consumer name is empty")
	}
	if eventID == uuid.Nil {
		return false, fmt.Errorf("inbox: event id is the nil UUID (read it from the message with an adapter such as FromKafka)")
	}
	n, err := dbx.Exec(ctx, tx, ib.insert, consumer, eventID.String())
	if err != nil {
		return false, fmt.Errorf("inbox: record %s for %s: %w", eventID, consumer, err)
	}
	if n == 0 {
		return false, nil
	}
	if err := fn(ctx, tx); err != nil {
		return false, err
	}
	return true, nil
}

// Processed reports whether consumer has processed eventID (as committed, or
// as seen by db when db is a transaction).
func (ib *Inbox) Processed(ctx context.Context, db sdk.Tx, consumer string, eventID uuid.UUID) (bool, error) {
	var found bool
	err := dbx.Query(ctx, db,
		"SELECT EXISTS (SELECT 1 FROM "+outboxschema.Quote(ib.schema)+"."+Table+" WHERE consumer = $1 AND event_id = $2::uuid)",
		[]any{consumer, eventID.String()}, func(scan func(...any) error) error { return scan(&found) })
	if err != nil {
		return false, fmt.Errorf("inbox: %w", err)
	}
	return found, nil
}

// Prune deletes inbox rows processed before olderThan ago, in batches of
// batchSize rows (default 1000), and returns how many it deleted. Keep rows
// longer than any redelivery can arrive late (broker retention, consumer
// outages): a pruned id is applied again if its event comes back.
func (ib *Inbox) Prune(ctx context.Context, db sdk.Tx, olderThan time.Duration, batchSize int) (int64, error) {
	batchSize = cmp.Or(batchSize, 1000)
	q := "DELETE FROM " + outboxschema.Quote(ib.schema) + "." + Table + " WHERE ctid IN (SELECT ctid FROM " +
		outboxschema.Quote(ib.schema) + "." + Table + " WHERE processed_at < $1 LIMIT $2)"
	cutoff := time.Now().Add(-olderThan)
	var total int64
	for {
		n, err := dbx.Exec(ctx, db, q, cutoff, batchSize)
		total += n
		if err != nil {
			return total, fmt.Errorf("inbox: prune: %w", err)
		}
		if n < int64(batchSize) {
			return total, nil
		}
	}
}
