package nats

import (
	"fmt"
	"slices"
	"strings"

	"github.com/outboxrelay/outbox/sdk/wire"
)

// HeaderError reports an event header that NATS cannot carry as it is. The
// sink fails such a message permanently, before sending it: nats.go refuses
// the whole message for a header name it cannot write ("nats: message could
// not decode headers", which retrying cannot change), and it silently changes
// a value with CR or LF (into spaces) or with white space at either end
// (trimmed), so the consumer would read a header the application did not
// write.
type HeaderError struct {
	ID     string // the event id
	Header string
	Reason string
}

func (e *HeaderError) Error() string {
	return fmt.Sprintf("nats: event %s: header %s: %s (rename the header or change its value in the event, or route the event to another sink)",
		e.ID, quote(e.Header), e.Reason)
}

// CheckHeaders returns a *HeaderError for the first header (by name) of
// headers that NATS cannot carry unchanged, leaving out the ones the sink
// does not send (wire.NATSReserved). id is the event id, for the error.
//
// A header name is printable ASCII other than the separators nats.go refuses
// ( " ( ) , / : ; < = > ? @ [ \ ] { } ); space, control characters and
// non-ASCII are refused too. A value may hold anything but CR and LF, and may
// not begin or end with a space or a tab.
func CheckHeaders(id string, headers map[string]string) error {
	var bad []string
	for k, v := range headers {
		if !wire.NATSReserved(k) && headerProblem(k, v) != "" {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad) // the same error for the same event on every attempt
	reason := headerProblem(bad[0], headers[bad[0]])
	if len(bad) > 1 {
		reason += fmt.Sprintf(" (and %d more headers)", len(bad)-1)
	}
	return &HeaderError{ID: id, Header: bad[0], Reason: reason}
}

// headerNameSeparators are the printable ASCII characters nats.go refuses in
// a header name (its isHeaderKeyValid).
const headerNameSeparators = `"(),/:;<=>?@[\]{}`

// headerProblem says why NATS cannot carry header name: value unchanged, or "".
func headerProblem(name, value string) string {
	if name == "" {
		return "the name is empty"
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c <= ' ' || c >= 0x7f:
			return fmt.Sprintf("the name has %q at byte %d: a NATS header name is printable ASCII without spaces", c, i)
		case strings.IndexByte(headerNameSeparators, c) >= 0:
			return fmt.Sprintf("the name has %q at byte %d: a NATS header name may not contain any of %s", c, i, headerNameSeparators)
		}
	}
	if i := strings.IndexAny(value, "\r\n"); i >= 0 {
		return fmt.Sprintf("the value has %q at byte %d: NATS would turn it into a space", value[i], i)
	}
	if value != strings.Trim(value, " \t") {
		return "the value begins or ends with white space, which NATS trims"
	}
	return ""
}

// quote quotes s for an error, cut to 80 bytes.
func quote(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%q…", s[:80])
	}
	return fmt.Sprintf("%q", s)
}
