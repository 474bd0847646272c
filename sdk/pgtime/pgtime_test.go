package pgtime

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/sdk/internal/testdb"
)

// edges are timestamps at the ends of PostgreSQL's range and of Go's
// formats, with the text Format gives them.
var edges = []struct {
	pg   string // PostgreSQL input
	inf  pgtype.InfinityModifier
	t    time.Time
	text string
}{
	{"infinity", pgtype.Infinity, time.Time{}, "infinity"},
	{"-infinity", pgtype.NegativeInfinity, time.Time{}, "-infinity"},
	{"4713-01-01 00:00:00+00 BC", 0, time.Date(-4712, 1, 1, 0, 0, 0, 0, time.UTC), "-004712-01-01T00:00:00Z"},
	{"4714-11-24 00:00:00+00 BC", 0, time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC), "-004713-11-24T00:00:00Z"},
	{"0002-12-31 23:59:59.999999+00 BC", 0, time.Date(-1, 12, 31, 23, 59, 59, 999999000, time.UTC), "-000001-12-31T23:59:59.999999Z"},
	{"0001-02-29 12:00:00+00 BC", 0, time.Date(0, 2, 29, 12, 0, 0, 0, time.UTC), "0000-02-29T12:00:00Z"},
	{"0001-01-01 00:00:00+00", 0, time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), "0001-01-01T00:00:00Z"},
	{"1707-06-01 12:00:00.123456+00", 0, time.Date(1707, 6, 1, 12, 0, 0, 123456000, time.UTC), "1707-06-01T12:00:00.123456Z"},
	{"1969-12-31 23:59:59.000001+00", 0, time.Date(1969, 12, 31, 23, 59, 59, 1000, time.UTC), "1969-12-31T23:59:59.000001Z"},
	{"2026-03-01 12:00:00.5+01", 0, time.Date(2026, 3, 1, 11, 0, 0, 5e8, time.UTC), "2026-03-01T11:00:00.5Z"},
	{"2300-01-01 00:00:00+00", 0, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), "2300-01-01T00:00:00Z"},
	{"9999-12-31 23:59:59.999999+00", 0, time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), "9999-12-31T23:59:59.999999Z"},
	{"10000-01-01 00:00:00+00", 0, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "+010000-01-01T00:00:00Z"},
	{"294276-12-31 23:59:59.999999+00", 0, time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC), "+294276-12-31T23:59:59.999999Z"},
}

func binaryOf(t time.Time, inf pgtype.InfinityModifier) []byte {
	var us int64
	switch inf {
	case pgtype.Infinity:
		us = math.MaxInt64
	case pgtype.NegativeInfinity:
		us = math.MinInt64
	default:
		us = (t.Unix()-pgEpochUnix)*1_000_000 + int64(t.Nanosecond()/1000)
	}
	return binary.BigEndian.AppendUint64(nil, uint64(us))
}

func TestFormatParse(t *testing.T) {
	for _, e := range edges {
		if got := Format(e.t, e.inf); got != e.text {
			t.Errorf("Format(%s) = %q, want %q", e.pg, got, e.text)
		}
		pt, pinf, err := Parse(e.text)
		if err != nil || pinf != e.inf || pt != e.t {
			t.Errorf("Parse(%q) = %v %v %v, want %v %v", e.text, pt, pinf, err, e.t, e.inf)
		}
		if RFC3339(e.t, e.inf) != (e.inf == 0 && e.t.Year() >= 0 && e.t.Year() <= 9999) {
			t.Errorf("RFC3339(%s) = %v", e.pg, !RFC3339(e.t, e.inf))
		}
		b, err := json.Marshal(Value{e.t, e.inf})
		if err != nil {
			t.Fatalf("json.Marshal(%s): %v", e.pg, err)
		}
		var v Value
		if err := json.Unmarshal(b, &v); err != nil || v.Time != e.t || v.Inf != e.inf {
			t.Errorf("JSON round trip of %s via %s: %v %v %v", e.pg, b, v.Time, v.Inf, err)
		}
		dt, dinf, err := DecodeBinary(binaryOf(e.t, e.inf))
		if err != nil || dt != e.t || dinf != e.inf {
			t.Errorf("DecodeBinary(%s) = %v %v %v", e.pg, dt, dinf, err)
		}
	}
	for _, bad := range []string{"", "x", "+12-01-01T00:00:00Z", "+002001-02-29T00:00:00Z", "-00x712-01-01T00:00:00Z", "2026-13-01T00:00:00Z"} {
		if _, _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	for _, us := range []int64{minMicros - 1, endMicros} {
		if _, _, err := DecodeBinary(binary.BigEndian.AppendUint64(nil, uint64(us))); err == nil {
			t.Errorf("DecodeBinary(%d) accepted a value outside PostgreSQL's range", us)
		}
	}
	if _, _, err := DecodeBinary([]byte{1, 2}); err == nil {
		t.Error("DecodeBinary of 2 bytes accepted")
	}
}

// TestAgreesWithPostgreSQL decodes what the server sends, in binary and in
// text, and compares with pgx's own decoding and with the expected values.
func TestAgreesWithPostgreSQL(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testdb.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, e := range edges {
		// Binary only: pgx reads the text format of years past 9999 and BC
		// dates only from v5.9 on (the SDK requires v5.8.0); the relay reads
		// text in relay/decode.go, tested there.
		for _, format := range []int16{pgx.BinaryFormatCode} {
			rows, err := conn.Query(ctx, "SELECT $1::timestamptz, $1::timestamptz", pgx.QueryResultFormats{format}, e.pg)
			if err != nil {
				t.Fatal(err)
			}
			if !rows.Next() {
				t.Fatalf("%s: no row: %v", e.pg, rows.Err())
			}
			raw := append([]byte(nil), rows.RawValues()[0]...)
			var viaPgx Value
			if err := rows.Scan(&viaPgx, nil); err != nil {
				t.Fatalf("%s: pgx scan: %v", e.pg, err)
			}
			rows.Close()
			got, inf, err := DecodeBinary(raw)
			if err != nil {
				t.Fatalf("%s (format %d): %v", e.pg, format, err)
			}
			if got != e.t || inf != e.inf || viaPgx.Time != e.t || viaPgx.Inf != e.inf {
				t.Errorf("%s (format %d): decoded %v %v, pgx %v %v, want %v %v", e.pg, format, got, inf, viaPgx.Time, viaPgx.Inf, e.t, e.inf)
			}
		}
		// And back: the value bound as a parameter is the same timestamptz.
		var same bool
		if err := conn.QueryRow(ctx, "SELECT $1::timestamptz = $2::timestamptz", Value{e.t, e.inf}, e.pg).Scan(&same); err != nil || !same {
			t.Errorf("%s bound as a parameter: equal %v, %v", e.pg, same, err)
		}
	}
}
