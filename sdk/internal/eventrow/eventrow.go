// Package eventrow reads rows of the outbox events table back into sdk.Event
// values, through pgx or database/sql alike.
package eventrow

import (
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// Columns is the select list Scan expects: outboxschema.EventColumns, in
// order, in forms every driver reads. headers comes as text, and each
// timestamp as its finite value (NULL for 'infinity' and '-infinity')
// followed by which infinity it is (1, -1, 0 when finite); then seq, the
// row's place in insertion order.
var Columns = columns()

func columns() string {
	var cols []string
	for _, c := range outboxschema.ColumnNames(outboxschema.EventColumns) {
		switch c {
		case "headers":
			cols = append(cols, "headers::text")
		case "occurred_at", "created_at":
			cols = append(cols, "CASE WHEN isfinite("+c+") THEN "+c+" END",
				"CASE "+c+" WHEN 'infinity' THEN 1 WHEN '-infinity' THEN -1 ELSE 0 END")
		default:
			cols = append(cols, c)
		}
	}
	return strings.Join(append(cols, "seq"), ", ")
}

// Row is one event row.
type Row struct {
	Event     sdk.Event
	CreatedAt time.Time
	// OccurredAtInf and CreatedAtInf are pgtype.Infinity or
	// pgtype.NegativeInfinity when the column holds 'infinity' or
	// '-infinity' (Event.OccurredAt or CreatedAt is then the zero time).
	OccurredAtInf, CreatedAtInf pgtype.InfinityModifier
	// Seq is the row's place in insertion order (the seq identity column).
	Seq int64
}

// Scan reads one row selected with Columns.
func Scan(scan func(dest ...any) error) (Row, error) {
	var (
		r       Row
		e       = &r.Event
		headers string
		tenant  sql.NullString
		id      uuid.UUID

		occurred, created       sql.NullTime
		occurredInf, createdInf int64
	)
	if err := scan(&id, &e.AggregateType, &e.AggregateID, &e.EventType, &e.SchemaVersion,
		&e.Payload, &e.ContentType, &headers, &tenant, &occurred, &occurredInf, &created, &createdInf, &r.Seq); err != nil {
		return r, err
	}
	e.OccurredAt, r.CreatedAt = occurred.Time.UTC(), created.Time.UTC()
	r.OccurredAtInf, r.CreatedAtInf = pgtype.InfinityModifier(occurredInf), pgtype.InfinityModifier(createdInf)
	e.ID = id
	e.TenantID = tenant.String
	if headers != "" && headers != "{}" {
		h, err := Headers([]byte(headers))
		if err != nil {
			return r, fmt.Errorf("event %s: %w", id, err)
		}
		e.Headers = h
	}
	return r, nil
}

// Headers decodes the headers column. Values that are not strings (rows
// inserted by hand) are kept as their JSON text. Anything but a JSON object
// is an error, and so is a header whose name or value is not valid UTF-8
// (possible in a SQL_ASCII database), naming the header.
func Headers(b []byte) (map[string]string, error) {
	h, err := outboxschema.DecodeHeaders(b)
	if err != nil {
		return nil, fmt.Errorf("headers: %w", err)
	}
	return h, nil
}
