package sdk

import (
	"encoding/json"
	"fmt"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// MaxFieldBytes bounds each text field (aggregate_type, aggregate_id,
// event_type, content_type, tenant_id): the outbox indexes some of them, and a
// PostgreSQL btree entry must stay under about 2.7 kB.
const MaxFieldBytes = 1024

// MaxBatchBytes bounds the payload and header bytes of one WriteBatch:
// PostgreSQL refuses a protocol message of 1 GB or more, and the batch travels
// in one. Split larger batches into several calls in the same transaction.
const MaxBatchBytes = 512 << 20

// row is a validated event with every default applied, ready to insert.
type row struct {
	ev      Event
	headers string // JSON object
	tenant  *string
}

// IsJSONContentType reports whether a media type is JSON: application/json or
// any type with a "+json" suffix (application/cloudevents+json, ...),
// parameters such as charset ignored.
func IsJSONContentType(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// prepare validates e and returns it as it will be stored: defaults applied,
// trace headers merged into a copy of e.Headers.
func (w *Writer) prepare(ctx trace, e *Event, index int, batch bool) (row, error) {
	fail := func(field string, sentinel error, format string, args ...any) (row, error) {
		return row{}, &ValidationError{Index: index, Field: field, Reason: fmt.Sprintf(format, args...), Err: sentinel, batch: batch}
	}
	r := row{ev: *e}
	ev := &r.ev

	for _, f := range []struct {
		name, value string
		required    bool
	}{
		{"aggregate_type", ev.AggregateType, true},
		{"aggregate_id", ev.AggregateID, true},
		{"event_type", ev.EventType, true},
		{"content_type", ev.ContentType, false},
		{"tenant_id", ev.TenantID, false},
		{"schema_version", ev.SchemaVersion, false},
	} {
		if f.value == "" {
			if f.required {
				return fail(f.name, ErrMissingField, "is required")
			}
			continue
		}
		if reason := badText(f.value); reason != "" {
			return fail(f.name, ErrInvalidField, "%s", reason)
		}
		if len(f.value) > MaxFieldBytes {
			return fail(f.name, ErrInvalidField, "is %d bytes, longer than the limit of %d", len(f.value), MaxFieldBytes)
		}
	}

	if ev.SchemaVersion == "" {
		ev.SchemaVersion = DefaultSchemaVersion
	} else if _, _, err := ParseSchemaVersion(ev.SchemaVersion); err != nil {
		return fail("schema_version", ErrInvalidField, "%v", err)
	}

	if ev.ContentType == "" {
		ev.ContentType = DefaultContentType
	} else if mt, _, err := mime.ParseMediaType(ev.ContentType); err != nil || !strings.Contains(mt, "/") {
		return fail("content_type", ErrInvalidField, "%q is not a media type such as application/json or application/x-protobuf", ev.ContentType)
	}

	if len(ev.Payload) == 0 {
		return fail("payload", ErrMissingField, "is required (an event without data can carry {})")
	}
	if len(ev.Payload) > w.cfg.MaxPayloadBytes {
		return fail("payload", ErrPayloadTooLarge, "is %d bytes, larger than the limit of %d (Config.MaxPayloadBytes); store large data elsewhere and send a reference", len(ev.Payload), w.cfg.MaxPayloadBytes)
	}
	if IsJSONContentType(ev.ContentType) && !json.Valid(ev.Payload) {
		return fail("payload", ErrInvalidJSON, "content type %s requires valid JSON; set ContentType for other encodings", ev.ContentType)
	}

	// Headers: a copy, so the caller's map is never changed, with the trace
	// context added where the caller did not set the key.
	headers := make(map[string]string, len(ev.Headers)+2)
	for k, v := range ev.Headers {
		if k == "" {
			return fail("headers", ErrInvalidField, "a header name is empty")
		}
		if reason := badText(k); reason != "" {
			return fail("headers", ErrInvalidField, "header name %q: %s", k, reason)
		}
		if reason := badText(v); reason != "" {
			return fail("headers."+k, ErrInvalidField, "%s", reason)
		}
		headers[k] = v
	}
	for k, v := range ctx {
		if _, set := headers[k]; !set {
			headers[k] = v
		}
	}
	hj, err := json.Marshal(headers)
	if err != nil {
		return fail("headers", ErrInvalidField, "%v", err)
	}
	if len(hj) > w.cfg.MaxHeaderBytes {
		return fail("headers", ErrHeadersTooLarge, "encode to %d bytes of JSON, larger than the limit of %d (Config.MaxHeaderBytes)", len(hj), w.cfg.MaxHeaderBytes)
	}
	r.headers = string(hj)
	if len(headers) == 0 {
		ev.Headers = nil
	} else {
		ev.Headers = headers
	}

	if ev.TenantID != "" {
		t := ev.TenantID
		r.tenant = &t
	}
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = w.now()
	}
	if ev.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return row{}, fmt.Errorf("sdk: make event id: %w", err)
		}
		ev.ID = id
	}
	return r, nil
}

// badText says why PostgreSQL text or jsonb cannot hold s, or "".
func badText(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "contains a NUL byte, which PostgreSQL text cannot store"
	}
	return ""
}

// trace is the trace context headers captured from a context.
type trace map[string]string

func (w *Writer) now() time.Time {
	// PostgreSQL keeps microseconds; rounding here makes the value the
	// caller sees equal the stored one.
	return time.Now().Round(time.Microsecond)
}
