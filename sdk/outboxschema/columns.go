package outboxschema

import "strings"

// The columns of the outbox's tables, as SQL select lists in table order. Every
// reader and writer of the outbox builds its statements from these (the SDK's
// writer and readers, the relay's replication decoder, snapshot, dead-letter
// writer and replays, the dead-letter store), so that a column is added in one
// place; outboxschema's tests check them against the migrations.
const (
	// eventValueColumns are an event's columns between its id and its
	// created_at.
	eventValueColumns = "aggregate_type, aggregate_id, event_type, schema_version, payload, content_type, headers, tenant_id, occurred_at"

	// WrittenEventColumns are the columns of the events table an application
	// writes: an event's columns without created_at, which the database
	// sets.
	WrittenEventColumns = "id, " + eventValueColumns

	// EventColumns are the columns of the events table that make up an
	// event, in the order every reader of the outbox selects them. The
	// table's other columns (delivered_at, seq) are the relay's
	// bookkeeping.
	EventColumns = WrittenEventColumns + ", created_at"

	// DeadLetterEventColumns are a dead letter's copy of its event:
	// EventColumns with event_id for id.
	DeadLetterEventColumns = "event_id, " + eventValueColumns + ", created_at"

	// DeadLetterFailureColumns say where a dead letter's delivery failed,
	// how often and why.
	DeadLetterFailureColumns = "route, sink, destination, attempts, last_error, errors, first_failed_at, last_failed_at"

	// DeadLetterReplayColumns are a dead letter's replay state.
	DeadLetterReplayColumns = "replay_status, replay_requested_at, replayed_at, replay_count"

	// DeadLetterEventSeq is the dead letter's copy of its event's seq: the
	// order replays follow (migration 3).
	DeadLetterEventSeq = "event_seq"

	// DeadLetterColumns are every column of the dead_letters table.
	DeadLetterColumns = "id, " + DeadLetterEventColumns + ", " + DeadLetterFailureColumns + ", " + DeadLetterReplayColumns + ", " + DeadLetterEventSeq
)

// ColumnNames splits one of the column lists above into its names.
func ColumnNames(list string) []string {
	return strings.Split(list, ", ")
}

// The replay statuses of a dead letter (dead_letters.replay_status), in the
// order a replay goes through them: an operator asks for a replay
// (requested), the active relay claims the row and sends the event again
// (delivering), and records the outcome (replayed, or failed when the replay
// was dead-lettered again).
const (
	ReplayNone       = "none"       // never replayed
	ReplayRequested  = "requested"  // an operator asked for a replay
	ReplayDelivering = "delivering" // the active relay is sending it
	ReplayReplayed   = "replayed"   // delivered again
	ReplayFailed     = "failed"     // the replay failed too
)

// ReplayStatuses lists every replay status, in that order.
func ReplayStatuses() []string {
	return []string{ReplayNone, ReplayRequested, ReplayDelivering, ReplayReplayed, ReplayFailed}
}
