// Package sdk writes events into the transactional outbox.
//
// An application calls [Writer.Write] or [Writer.WriteBatch] inside its own
// business transaction: the event row is inserted into the outbox table
// (<schema>.events) in that transaction, so it exists if and only if the
// business change commits. The relay (`outbox relay`) later reads the row from
// the replication stream and delivers it to the brokers.
//
// The transaction may be a pgx v5 [github.com/jackc/pgx/v5.Tx] or a
// [database/sql.Tx] (any driver). [Writer.Write] adds exactly one statement to
// the transaction; [Writer.WriteBatch] adds one statement (a multi-row INSERT
// over arrays) and so one round trip, however many events it carries.
//
// Events are validated before anything is sent: a bad event returns a
// [*ValidationError] that matches one of the sentinel errors ([ErrMissingField],
// [ErrInvalidField], [ErrPayloadTooLarge], [ErrHeadersTooLarge], [ErrInvalidJSON],
// [ErrBatchTooLarge]) with [errors.Is], and nothing is written.
//
// The OpenTelemetry trace context in ctx is captured into the event's headers
// (traceparent, tracestate) so the relay can continue the trace.
//
// Sub-packages build on the write path: inbox (idempotent consumers and
// broker-message adapters), versions (decoding by schema_version with
// upcasters), history (loading an aggregate's events and folding them into
// state) and outboxtest (helpers for the application's own tests).
package sdk
