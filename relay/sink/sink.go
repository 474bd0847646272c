package sink

import (
	"context"
	"errors"
	"fmt"
)

// Sink delivers messages to one broker.
//
// Contract:
//   - Publish may be called from several goroutines at once, each with its own
//     batch; the relay bounds how many batches are in flight per sink.
//   - The relay never puts two messages with the same ordering key (Event.Key) in
//     flight at once, so a sink needs no ordering of its own across or within
//     batches; it must not reorder one key's messages either, which holds
//     trivially under that rule.
//   - Publish returns nil when every message was durably accepted by the broker
//     (acked, confirmed, written), or a slice with one entry per message: nil for
//     a message that was accepted, an error for one that was not. It must not
//     return before every message has its outcome, or ctx is done.
//   - An error is retried by the relay unless Permanent(err) reports true; a
//     permanent error (too large, unroutable, unknown destination, not
//     authorised) sends the message to the dead-letter table. Every message
//     carries its event id where the broker deduplicates or consumers can see
//     it, so a retry after an ambiguous failure can be recognised downstream.
//   - Close releases the connection; the relay calls it after its last Publish
//     returned.
type Sink interface {
	Publish(ctx context.Context, msgs []*Message) []error
	Close() error
}

// ErrPermanent marks errors that retrying cannot fix.
var ErrPermanent = errors.New("permanent delivery failure")

// PermanentError wraps an error that retrying cannot fix.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Is reports PermanentError as ErrPermanent.
func (e *PermanentError) Is(target error) bool { return target == ErrPermanent }

// MarkPermanent wraps err so that Permanent reports true for it. A nil err stays nil.
func MarkPermanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Permanentf formats a permanent error.
func Permanentf(format string, args ...any) error {
	return &PermanentError{Err: fmt.Errorf(format, args...)}
}

// Permanent reports whether err is a delivery failure that retrying cannot fix.
func Permanent(err error) bool {
	return errors.Is(err, ErrPermanent)
}

// AllFailed returns a result slice for Publish in which every message failed with err.
func AllFailed(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}
