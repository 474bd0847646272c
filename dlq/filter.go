package dlq

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Filter selects dead letters. Zero fields select everything; set fields are
// combined with AND.
type Filter struct {
	// IDs are dead-letter ids. A selection by ids fails with a *NotFoundError
	// when one of them does not exist, before anything changes.
	IDs []int64
	// EventID selects the dead letters of one event (one per failed route).
	EventID uuid.UUID
	// Route is the route's name, exactly.
	Route string
	// EventType is an event type, exact or a glob with the router's syntax
	// (* and ? wildcards, [a-z] classes), e.g. "order.*".
	EventType string
	// AggregateType and AggregateID select by aggregate; AggregateID needs
	// AggregateType. See ParseAggregate.
	AggregateType string
	AggregateID   string
	// Since and Until bound last_failed_at: Since <= last_failed_at < Until.
	Since time.Time
	Until time.Time
	// Status selects by replay status.
	Status Status
	// Limit caps the rows selected (the lowest ids first). 0 means no limit.
	Limit int
}

// ErrBadFilter matches every error of Filter.Validate.
var ErrBadFilter = errors.New("bad filter")

type filterError struct{ msg string }

func (e *filterError) Error() string        { return e.msg }
func (e *filterError) Is(target error) bool { return target == ErrBadFilter }

func badFilter(format string, args ...any) error {
	return &filterError{msg: fmt.Sprintf(format, args...)}
}

// Validate reports a filter that cannot select anything sensible.
func (f *Filter) Validate() error {
	if f.EventType != "" {
		if _, err := path.Match(f.EventType, ""); err != nil {
			return badFilter("bad event type glob %q: %v (use * and ? wildcards, [a-z] classes)", f.EventType, err)
		}
		if _, err := regexp.Compile(globRegexp(f.EventType)); err != nil {
			return badFilter("bad event type glob %q: a class range runs backwards or is malformed (use * and ? wildcards, [a-z] classes)", f.EventType)
		}
	}
	if f.AggregateID != "" && f.AggregateType == "" {
		return badFilter("an aggregate id needs its aggregate type (TYPE:ID)")
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return badFilter("since (%s) must be before until (%s)", f.Since.UTC().Format(time.RFC3339), f.Until.UTC().Format(time.RFC3339))
	}
	if f.Status != "" && !f.Status.Valid() {
		return badFilter("unknown replay status %q (valid: %s)", f.Status, strings.Join(statusNames(), ", "))
	}
	if f.Limit < 0 {
		return badFilter("limit must not be negative")
	}
	for _, id := range f.IDs {
		if id <= 0 {
			return badFilter("dead-letter ids are positive integers, not %d", id)
		}
	}
	return nil
}

// Empty reports whether f selects every dead letter.
func (f *Filter) Empty() bool {
	return len(f.IDs) == 0 && f.EventID == uuid.Nil && f.Route == "" && f.EventType == "" &&
		f.AggregateType == "" && f.Since.IsZero() && f.Until.IsZero() && f.Status == ""
}

// ParseAggregate splits "TYPE:ID" (or just "TYPE") at the first colon.
func ParseAggregate(s string) (typ, id string, err error) {
	typ, id, found := strings.Cut(s, ":")
	if typ == "" || (found && id == "") {
		return "", "", badFilter("aggregate %q: write TYPE or TYPE:ID, e.g. order:o-42", s)
	}
	return typ, id, nil
}

// where renders f as a WHERE clause (without the keyword) with its arguments
// numbered from $1. It returns "true" for an empty filter.
func (f *Filter) where() (string, []any) {
	var conds []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if len(f.IDs) > 0 {
		conds = append(conds, "id = ANY("+arg(f.IDs)+")")
	}
	if f.EventID != uuid.Nil {
		conds = append(conds, "event_id = "+arg(f.EventID))
	}
	if f.Route != "" {
		conds = append(conds, "route = "+arg(f.Route))
	}
	if f.EventType != "" {
		if strings.ContainsAny(f.EventType, `*?[\`) {
			conds = append(conds, "event_type ~ "+arg(globRegexp(f.EventType)))
		} else {
			conds = append(conds, "event_type = "+arg(f.EventType))
		}
	}
	if f.AggregateType != "" {
		conds = append(conds, "aggregate_type = "+arg(f.AggregateType))
	}
	if f.AggregateID != "" {
		conds = append(conds, "aggregate_id = "+arg(f.AggregateID))
	}
	if !f.Since.IsZero() {
		conds = append(conds, "last_failed_at >= "+arg(f.Since))
	}
	if !f.Until.IsZero() {
		conds = append(conds, "last_failed_at < "+arg(f.Until))
	}
	if f.Status != "" {
		conds = append(conds, "replay_status = "+arg(string(f.Status)))
	}
	if len(conds) == 0 {
		return "true", nil
	}
	return strings.Join(conds, " AND "), args
}

// globRegexp translates a path.Match pattern (already validated) into an
// anchored POSIX regular expression with the same meaning.
func globRegexp(glob string) string {
	var b strings.Builder
	b.WriteString("^")
	g := []rune(glob)
	for i := 0; i < len(g); i++ {
		switch c := g[i]; c {
		case '*':
			b.WriteString("[^/]*")
		case '?':
			b.WriteString("[^/]")
		case '\\':
			if i+1 < len(g) {
				i++
				b.WriteString(regexp.QuoteMeta(string(g[i])))
			}
		case '[':
			j := i + 1
			b.WriteString("[")
			if j < len(g) && g[j] == '^' {
				b.WriteString("^")
				j++
			}
			for ; j < len(g) && g[j] != ']'; j++ {
				c := g[j]
				escaped := c == '\\' && j+1 < len(g)
				if escaped {
					j++
					c = g[j]
				}
				if c == '[' || (escaped && c < utf8.RuneSelf && !unicode.IsLetter(c) && !unicode.IsDigit(c)) {
					b.WriteString(`\`) // a literal punctuation character, not an operator
				}
				b.WriteRune(c)
			}
			b.WriteString("]")
			i = j
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return b.String()
}
