// Package dbx runs statements on whatever the application handed the SDK: a
// pgx v5 transaction or connection, or a database/sql transaction or
// connection of any driver. It also encodes PostgreSQL array literals for
// drivers that cannot bind Go slices.
package dbx

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrUnsupported is returned for a handle that is neither pgx nor database/sql.
var ErrUnsupported = errors.New("unsupported transaction type")

// PgxExecer is the Exec method of pgx.Tx, *pgx.Conn and *pgxpool.Pool.
type PgxExecer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// SQLExecer is the ExecContext method of *sql.Tx, *sql.Conn and *sql.DB.
type SQLExecer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// PgxQuerier is the Query method of pgx.Tx, *pgx.Conn and *pgxpool.Pool.
type PgxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// SQLQuerier is the QueryContext method of *sql.Tx, *sql.Conn and *sql.DB.
type SQLQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Kind is how a handle is driven.
type Kind int

const (
	None Kind = iota
	// Pgx binds Go slices to array parameters natively (binary format).
	Pgx
	// SQL goes through database/sql; arrays are sent as text literals so
	// every driver can bind them.
	SQL
)

// ExecKind reports how Exec drives db.
func ExecKind(db any) Kind {
	switch db.(type) {
	case PgxExecer:
		return Pgx
	case SQLExecer:
		return SQL
	}
	return None
}

// UnsupportedError is the error for a handle of the None kind.
func UnsupportedError(db any) error {
	if db == nil {
		return fmt.Errorf("%w: nil (pass the pgx.Tx or *sql.Tx of the business transaction)", ErrUnsupported)
	}
	return fmt.Errorf("%w %T (pass a pgx.Tx or *sql.Tx)", ErrUnsupported, db)
}

// Exec runs one statement and returns the number of rows it affected.
func Exec(ctx context.Context, db any, query string, args ...any) (int64, error) {
	switch x := db.(type) {
	case PgxExecer:
		tag, err := x.Exec(ctx, query, args...)
		if err != nil {
			return 0, err
		}
		return tag.RowsAffected(), nil
	case SQLExecer:
		res, err := x.ExecContext(ctx, query, args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	}
	return 0, UnsupportedError(db)
}

// Query runs a query and calls each for every row with a function that scans
// the row's columns into dest (pointers accepted by both pgx and
// database/sql: *string, *[]byte, *time.Time, *uuid.UUID, *sql.NullString...).
func Query(ctx context.Context, db any, query string, args []any, each func(scan func(dest ...any) error) error) error {
	switch x := db.(type) {
	case PgxQuerier:
		rows, err := x.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := each(rows.Scan); err != nil {
				return err
			}
		}
		return rows.Err()
	case SQLQuerier:
		rows, err := x.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := each(rows.Scan); err != nil {
				return err
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return rows.Close()
	}
	return UnsupportedError(db)
}

// TextArray encodes a text[] literal; a nil element is NULL.
func TextArray(n int, elem func(i int) (s string, null bool)) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		s, null := elem(i)
		if null {
			b.WriteString("NULL")
			continue
		}
		quote(&b, s)
	}
	b.WriteByte('}')
	return b.String()
}

// ByteaArray encodes a bytea[] literal with hex elements.
func ByteaArray(vals [][]byte) string {
	size := 2
	for _, v := range vals {
		size += 6 + 2*len(v)
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteByte('{')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		// Inside a quoted array element a backslash is escaped, so the
		// element \x0102 is written "\\x0102".
		b.WriteString(`"\\x`)
		b.WriteString(hex.EncodeToString(v))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// TimeArray encodes a timestamptz[] literal.
func TimeArray(vals []time.Time) string {
	return TextArray(len(vals), func(i int) (string, bool) {
		return vals[i].Format(time.RFC3339Nano), false
	})
}

func quote(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
}
