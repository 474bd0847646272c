// Package eventrow reads rows of the outbox events table back into sdk.Event
// values, through pgx or database/sql alike.
package eventrow

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/outboxrelay/outbox/sdk"
)

// Columns is the select list Scan expects, in order.
const Columns = "id, aggregate_type, aggregate_id, event_type, schema_version, payload, content_type, headers::text, tenant_id, occurred_at, created_at"

// Row is one event row.
type Row struct {
	Event     sdk.Event
	CreatedAt time.Time
}

// Scan reads one row selected with Columns.
func Scan(scan func(dest ...any) error) (Row, error) {
	var (
		r       Row
		e       = &r.Event
		headers string
		tenant  sql.NullString
		id      uuid.UUID
	)
	if err := scan(&id, &e.AggregateType, &e.AggregateID, &e.EventType, &e.SchemaVersion,
		&e.Payload, &e.ContentType, &headers, &tenant, &e.OccurredAt, &r.CreatedAt); err != nil {
		return r, err
	}
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
// inserted by hand) are kept as their JSON text.
func Headers(b []byte) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("headers: %w", err)
	}
	if len(raw) == 0 {
		return nil, nil
	}
	h := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			h[k] = s
		} else {
			h[k] = string(v)
		}
	}
	return h, nil
}
