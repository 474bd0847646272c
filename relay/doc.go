// Package relay is the outbox relay: it tails the outbox events table through
// PostgreSQL logical replication (pgoutput), routes each event by rules, and
// delivers it at least once, in order per key, to the configured sinks,
// marking each row once every route has handled it.
//
// A program runs it with New (a Config from LoadConfig or NewConfig, and the
// sinks by name) and Relay.Run. Everything else is the relay's own; the
// pieces, each in its own file (docs/architecture.md has the map and the
// path of one event):
//
//   - session.go: one stretch of being connected, and the order its parts
//     take over; connect.go checks the database.
//   - leader.go: the advisory lock that makes one relay active.
//   - slot.go, snapshot.go: the replication slot, and the hand-over from a
//     new slot's snapshot to its stream.
//   - stream.go, catchup.go: reading the stream (internal/pgoutput decodes
//     it) into the pipeline, and skipping what a previous session delivered.
//   - pipeline.go: the stages an event goes through and the channels between
//     them: dispatch.go (per-key order, batches, retries), deadletter.go,
//     mark.go, gate.go (max_pending), replay.go (dead-letter replays).
//   - position.go: the one place that decides how far the slot may be
//     confirmed.
//   - router.go, filter.go, destination.go: routing rules.
package relay
