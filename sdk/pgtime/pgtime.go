// Package pgtime converts PostgreSQL timestamptz values to Go and to text
// without loss: every time PostgreSQL stores (4713 BC to 294276 AD, to the
// microsecond) and 'infinity' / '-infinity'.
//
// Go's time.Time holds every finite value but not the infinities, and its
// RFC 3339 and JSON forms stop at the years 0000-9999 (json.Marshal fails
// outside them). A value here is a time.Time and a pgtype.InfinityModifier;
// its text is Format's, which Parse reads back.
package pgtime

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

const (
	// pgEpochUnix is PostgreSQL's epoch, 2000-01-01 00:00:00 UTC, in Unix seconds.
	pgEpochUnix = 946_684_800
	// minMicros and endMicros bound PostgreSQL's timestamps, in microseconds
	// from its epoch: 4714-11-24 00:00:00 BC (the lowest) and 294277-01-01
	// 00:00:00 (just past the highest). See datatype/timestamp.h.
	minMicros = -211_813_488_000_000_000
	endMicros = 9_223_371_331_200_000_000
)

// DecodeBinary decodes a timestamptz in PostgreSQL's binary format (what
// pgoutput sends with binary 'true', and a query's binary result): the
// time in UTC, or the zero time and Infinity or NegativeInfinity.
func DecodeBinary(b []byte) (time.Time, pgtype.InfinityModifier, error) {
	if len(b) != 8 {
		return time.Time{}, pgtype.Finite, fmt.Errorf("timestamptz is %d bytes, want 8", len(b))
	}
	us := int64(binary.BigEndian.Uint64(b))
	switch us {
	case math.MaxInt64:
		return time.Time{}, pgtype.Infinity, nil
	case math.MinInt64:
		return time.Time{}, pgtype.NegativeInfinity, nil
	}
	if us < minMicros || us >= endMicros {
		return time.Time{}, pgtype.Finite, fmt.Errorf("timestamptz %d microseconds from 2000-01-01 is outside PostgreSQL's range", us)
	}
	sec, rem := us/1_000_000, us%1_000_000
	if rem < 0 {
		sec, rem = sec-1, rem+1_000_000
	}
	return time.Unix(sec+pgEpochUnix, rem*1000).UTC(), pgtype.Finite, nil
}

// FromPG returns a scanned value in UTC: the zero time with Infinity or
// NegativeInfinity for the infinities, and the zero time for NULL.
func FromPG(ts pgtype.Timestamptz) (time.Time, pgtype.InfinityModifier) {
	if !ts.Valid {
		return time.Time{}, pgtype.Finite
	}
	if ts.InfinityModifier != pgtype.Finite {
		return time.Time{}, ts.InfinityModifier
	}
	return ts.Time.UTC(), pgtype.Finite
}

// ToPG returns the value as a query argument.
func ToPG(t time.Time, inf pgtype.InfinityModifier) pgtype.Timestamptz {
	if inf != pgtype.Finite {
		return pgtype.Timestamptz{InfinityModifier: inf, Valid: true}
	}
	return pgtype.Timestamptz{Time: t, Valid: true}
}

// RFC3339 reports whether Format writes the value as RFC 3339: it is
// finite and its year (in UTC) is 0000 to 9999.
func RFC3339(t time.Time, inf pgtype.InfinityModifier) bool {
	if inf != pgtype.Finite {
		return false
	}
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// Format returns the value's lossless text:
//   - "infinity" and "-infinity", as PostgreSQL writes them;
//   - for the years 0000 to 9999, RFC 3339 in UTC with as many fraction
//     digits as needed (time.RFC3339Nano), e.g. "2026-03-01T12:00:00.5Z";
//   - outside them, ISO 8601's expanded form as ECMAScript and Java write
//     it: a sign and six year digits, e.g. "+294276-12-31T23:59:59.999999Z",
//     and "-004712-01-01T00:00:00Z" for 4713 BC (ISO counts 1 BC as year
//     0000, 2 BC as -0001).
func Format(t time.Time, inf pgtype.InfinityModifier) string {
	switch inf {
	case pgtype.Infinity:
		return "infinity"
	case pgtype.NegativeInfinity:
		return "-infinity"
	}
	t = t.UTC()
	y := t.Year()
	if y >= 0 && y <= 9999 {
		return t.Format(time.RFC3339Nano)
	}
	sign := byte('+')
	if y < 0 {
		sign, y = '-', -y
	}
	return fmt.Sprintf("%c%06d%s", sign, y, t.Format("-01-02T15:04:05.999999999Z07:00"))
}

// ErrSyntax is returned by Parse for text it cannot read.
var ErrSyntax = errors.New("not a timestamp")

// Parse reads what Format writes, and any RFC 3339 timestamp. The time is
// in UTC.
func Parse(s string) (time.Time, pgtype.InfinityModifier, error) {
	switch s {
	case "infinity":
		return time.Time{}, pgtype.Infinity, nil
	case "-infinity":
		return time.Time{}, pgtype.NegativeInfinity, nil
	}
	if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		// Expanded year: parse the rest with a leap year in its place (so
		// that February 29 parses), then put the year back.
		dash := strings.IndexByte(s[1:], '-')
		if dash < 4 {
			return time.Time{}, pgtype.Finite, fmt.Errorf("%w: %q", ErrSyntax, s)
		}
		y, err := strconv.Atoi(s[1 : 1+dash])
		if err != nil {
			return time.Time{}, pgtype.Finite, fmt.Errorf("%w: %q", ErrSyntax, s)
		}
		if s[0] == '-' {
			y = -y
		}
		p, err := time.Parse(time.RFC3339Nano, "2000"+s[1+dash:])
		if err != nil {
			return time.Time{}, pgtype.Finite, fmt.Errorf("%w: %q", ErrSyntax, s)
		}
		t := time.Date(y, p.Month(), p.Day(), p.Hour(), p.Minute(), p.Second(), p.Nanosecond(), p.Location())
		if t.Day() != p.Day() {
			return time.Time{}, pgtype.Finite, fmt.Errorf("%w: %q: year %d has no February 29", ErrSyntax, s, y)
		}
		return t.UTC(), pgtype.Finite, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, pgtype.Finite, fmt.Errorf("%w: %q", ErrSyntax, s)
	}
	return t.UTC(), pgtype.Finite, nil
}

// Value is a timestamptz whose JSON form is Format's text. It scans from
// and binds to timestamptz with pgx.
type Value struct {
	Time time.Time
	Inf  pgtype.InfinityModifier
}

// String returns Format's text.
func (v Value) String() string { return Format(v.Time, v.Inf) }

// MarshalJSON writes Format's text as a JSON string.
func (v Value) MarshalJSON() ([]byte, error) { return strconv.AppendQuote(nil, v.String()), nil }

// UnmarshalJSON reads what MarshalJSON writes.
func (v *Value) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("%w: %s", ErrSyntax, b)
	}
	v.Time, v.Inf, err = Parse(s)
	return err
}

// ScanTimestamptz implements pgtype.TimestamptzScanner.
func (v *Value) ScanTimestamptz(ts pgtype.Timestamptz) error {
	v.Time, v.Inf = FromPG(ts)
	return nil
}

// TimestamptzValue implements pgtype.TimestamptzValuer.
func (v Value) TimestamptzValue() (pgtype.Timestamptz, error) { return ToPG(v.Time, v.Inf), nil }
