// Package pgoutput reads the outbox's events from PostgreSQL's logical
// replication stream: the pgoutput plugin's protocol 1 with binary values,
// which sends each transaction once it committed. Start begins streaming a
// slot; a Reader turns the stream's messages (keepalives, and Begin,
// Relation, Insert and Commit in XLogData) into transactions of decoded
// rows, without routing or delivering them; the Decoder does the same for
// the WAL data alone. ScanResult decodes the same columns from a query
// result (a new slot's snapshot, a dead letter's copy) with the same code,
// so a row has the same values however it was read.
//
// It imports the outbox's column list from sdk/outboxschema and pgx,
// pglogrepl; nothing of the relay.
package pgoutput
