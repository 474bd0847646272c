// Package dlq reads and manages the outbox's dead-letter table: one row per
// (event, route) that exhausted its retries or failed permanently.
//
// A Store lists, shows, replays and purges dead letters. It never delivers
// anything itself: a replay is a request written into the row, which the
// active relay carries out.
//
// # Replay protocol
//
// The column dead_letters.replay_status is one of none, requested,
// delivering, replayed or failed:
//
//   - RequestReplay moves the selected rows from none or failed (and replayed,
//     with Again) to requested, in one UPDATE whose WHERE clause checks the
//     status. PostgreSQL re-checks that clause on the newest version of a row
//     it had to wait for, so of two operators replaying the same rows at once
//     each row is requested by exactly one of them, and a row already requested
//     or being delivered is reported, not requested again. That is how a row is
//     never sent twice by two replays.
//   - The active relay claims requested rows (delivering), delivers the event
//     to the route named in the row only, with the destination rendered from
//     its current configuration and the same event id, and then sets replayed
//     (replayed_at, replay_count + 1) or failed (attempts added, last_error,
//     errors and last_failed_at updated).
//   - Wait polls the requested rows until each is replayed or failed.
//
// Purge deletes dead letters, skipping rows a replay is working on.
//
// Every statement names the table through a quoted identifier
// (internal/pgident), so the schema comes from configuration safely.
package dlq
