package sdk

import (
	"errors"
	"fmt"

	"github.com/outboxrelay/outbox/sdk/internal/dbx"
)

// Sentinel errors. Every validation failure is a [*ValidationError] whose
// Unwrap returns one of the first six, so callers match with [errors.Is].
var (
	// ErrMissingField: a required field (aggregate_type, aggregate_id,
	// event_type, payload) is empty.
	ErrMissingField = errors.New("missing required field")
	// ErrInvalidField: a field has a value the outbox cannot store or
	// deliver: a bad schema version or content type, invalid UTF-8, a NUL
	// byte, a field longer than MaxFieldBytes, an empty header name.
	ErrInvalidField = errors.New("invalid field")
	// ErrPayloadTooLarge: the payload is larger than Config.MaxPayloadBytes.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrHeadersTooLarge: the headers, encoded as JSON, are larger than
	// Config.MaxHeaderBytes.
	ErrHeadersTooLarge = errors.New("headers too large")
	// ErrInvalidJSON: the content type is JSON but the payload is not.
	ErrInvalidJSON = errors.New("payload is not valid JSON")
	// ErrBatchTooLarge: a WriteBatch carries more bytes than one statement
	// can (MaxBatchBytes); split it into several calls.
	ErrBatchTooLarge = errors.New("batch too large")

	// ErrUnsupportedTx: the transaction is neither a pgx Tx nor a *sql.Tx
	// (nor anything with the Exec or ExecContext method of one of them).
	ErrUnsupportedTx = dbx.ErrUnsupported
)

// ValidationError says which event and field failed validation and why.
// Nothing was written when Write or WriteBatch returns one.
type ValidationError struct {
	// Index is the event's position in the WriteBatch slice (0 for Write).
	Index int
	// Field is the event field, named as its column: "event_type",
	// "payload", "headers", "headers.traceparent", ... ("batch" for a whole
	// batch).
	Field string
	// Reason explains the failure and what to do.
	Reason string
	// Err is the sentinel: ErrMissingField, ErrInvalidField, ...
	Err error

	batch bool
}

func (e *ValidationError) Error() string {
	if e.batch && e.Field != "batch" {
		return fmt.Sprintf("sdk: event %d: %s: %s", e.Index, e.Field, e.Reason)
	}
	return fmt.Sprintf("sdk: %s: %s", e.Field, e.Reason)
}

// Unwrap returns the sentinel error.
func (e *ValidationError) Unwrap() error { return e.Err }
