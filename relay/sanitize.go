package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// A dead letter keeps a copy of what failed: the event's envelope, headers,
// destination and errors. They come from applications and brokers (a handler
// error built from payload bytes, a broker quoting the message), and
// PostgreSQL refuses some of them with a data exception (SQLSTATE class 22):
// a NUL in text or jsonb (\u0000), invalid UTF-8, a character the database's
// encoding lacks. Retrying such an INSERT cannot help, and while it is
// retried the event's key waits and the slot's position cannot advance. So
// the dead-letter writer stores a sanitized copy of every text, and on a data
// exception a stricter one; the payload (bytea) is always kept exactly.

// sanitizeLevel says how much of a dead letter's text is escaped.
type sanitizeLevel int

const (
	// escapeUnstorable writes a NUL and each byte of invalid UTF-8 as \x00,
	// \xff, and cuts each error text to maxErrorText bytes. Every dead
	// letter is stored at least this sanitized; text without such bytes is
	// stored as it is.
	escapeUnstorable sanitizeLevel = iota
	// escapeNonASCII also writes every non-ASCII character as \u20ac (or
	// \U0001f600): for a database whose encoding lacks one (SQLSTATE 22P05
	// in a LATIN1 database).
	escapeNonASCII
)

// maxErrorText bounds each error text stored (last_error, each entry of
// errors), in bytes after escaping: a broker quoting a 1 MB message, ten
// attempts of it, would otherwise make every dead letter that large.
const maxErrorText = 8 << 10

// deadLetterText is every text a dead-letter row stores, sanitized.
type deadLetterText struct {
	level                                                                       sanitizeLevel
	aggregateType, aggregateID, eventType, schemaVersion, contentType, tenantID string
	route, sink, destination                                                    string
	headers                                                                     string // a JSON object, for the jsonb column
	lastError                                                                   string
	errors                                                                      string // a JSON array of strings, for the jsonb column
}

// newDeadLetterText sanitizes dl's texts at level.
func newDeadLetterText(dl *delivery, level sanitizeLevel) *deadLetterText {
	e := dl.msg.Event
	s := func(v string) string { return sanitizeText(v, level) }
	headers := make(map[string]string, len(e.Headers))
	for _, k := range slices.Sorted(maps.Keys(e.Headers)) { // two keys that escape alike: the last wins, always the same
		headers[s(k)] = s(e.Headers[k])
	}
	hj, _ := json.Marshal(headers) // valid UTF-8 strings: cannot fail
	if level == escapeUnstorable && e.RawHeaders != nil && json.Valid(e.RawHeaders) {
		// The row's own jsonb text: an exact copy, and storable, since
		// PostgreSQL stored it once.
		hj = e.RawHeaders
	}
	errs := make([]string, len(dl.errs))
	for i, m := range dl.errs {
		errs[i] = cutText(s(m), maxErrorText)
	}
	ej, _ := json.Marshal(errs)
	last := ""
	if dl.err != nil {
		last = cutText(s(dl.err.Error()), maxErrorText)
	}
	return &deadLetterText{
		level:         level,
		aggregateType: s(e.AggregateType), aggregateID: s(e.AggregateID), eventType: s(e.EventType),
		schemaVersion: s(e.SchemaVersion), contentType: s(e.ContentType), tenantID: s(e.TenantID),
		route: s(dl.route.Name), sink: s(dl.route.Sink), destination: s(dl.msg.Destination),
		headers: string(hj), lastError: last, errors: string(ej),
	}
}

// stricter returns dl's texts escaped one level further when err, from
// inserting t, is a data exception (SQLSTATE class 22), or nil when err is
// another error (or none) or t is already as strict as it gets.
func (t *deadLetterText) stricter(dl *delivery, err error) *deadLetterText {
	if !dataException(err) || t.level >= escapeNonASCII {
		return nil
	}
	return newDeadLetterText(dl, t.level+1)
}

// dataException reports whether err is a PostgreSQL error of SQLSTATE class
// 22: a value the server cannot store (character not in the encoding,
// invalid byte sequence, unsupported Unicode escape, out of range).
func dataException(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "22")
}

// sanitizeText escapes what level says in s; see sanitizeLevel. Backslashes
// are not escaped: a stored `\x00` may also have been those four characters.
func sanitizeText(s string, level sanitizeLevel) string {
	clean := func(r rune) bool { return r == 0 || (level >= escapeNonASCII && r >= utf8.RuneSelf) }
	if utf8.ValidString(s) && !strings.ContainsFunc(s, clean) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == 0:
			b.WriteString(`\x00`)
		case level >= escapeNonASCII && r > 0xffff:
			fmt.Fprintf(&b, `\U%08x`, r)
		case level >= escapeNonASCII && r >= utf8.RuneSelf:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// cutText cuts s to at most max bytes, on a character boundary, and says
// how much went.
func cutText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + fmt.Sprintf(" [... %d more bytes cut by the relay]", len(s)-n)
}
