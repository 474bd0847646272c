package sdk

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Defaults applied to an Event's empty fields.
const (
	DefaultSchemaVersion = "1.0"
	DefaultContentType   = "application/json"
)

// Event is one outbox event: a row of <schema>.events, an envelope compatible
// with CloudEvents.
type Event struct {
	// ID identifies the event across retries and replays; consumers dedupe on
	// it. Zero means the SDK makes a UUIDv7 (time-ordered, monotonic within the
	// process).
	ID uuid.UUID
	// AggregateType and AggregateID say what the event is about, e.g. "order"
	// and "42". Together they are the ordering key: the relay delivers one
	// key's events in commit order. Both are required.
	AggregateType string
	AggregateID   string
	// EventType names the event, e.g. "order.created"; routes match on it.
	// Required.
	EventType string
	// SchemaVersion is the payload's schema version, "MAJOR.MINOR"; a new
	// major is a breaking change. Defaults to "1.0".
	SchemaVersion string
	// Payload is stored and delivered as these exact bytes. Required.
	Payload []byte
	// ContentType is the payload's media type. Defaults to "application/json".
	// A JSON type (application/json or a "+json" suffix) requires Payload to
	// be valid JSON.
	ContentType string
	// Headers are string headers delivered with the event. The SDK adds
	// traceparent and tracestate from the context unless they are set here.
	Headers map[string]string
	// TenantID is an optional tenant; empty stores NULL.
	TenantID string
	// OccurredAt is the business time of the event. Zero means now.
	OccurredAt time.Time
}

// Versioned is implemented by Go types that are the payload of one event type
// at one schema version. [NewEvent] takes the event's type and version from
// it; the versions package decodes stored events back into such types.
//
// Both methods must work on the zero value: they describe the type, not a
// particular value.
type Versioned interface {
	EventType() string
	SchemaVersion() string
}

// NewEvent returns an event about the aggregate whose EventType and
// SchemaVersion come from v and whose payload is v encoded as JSON.
func NewEvent(aggregateType, aggregateID string, v Versioned) (Event, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return Event{}, fmt.Errorf("sdk: encode %s payload: %w", v.EventType(), err)
	}
	return Event{
		AggregateType: aggregateType,
		AggregateID:   aggregateID,
		EventType:     v.EventType(),
		SchemaVersion: v.SchemaVersion(),
		Payload:       payload,
		ContentType:   DefaultContentType,
	}, nil
}

// ParseSchemaVersion splits a "MAJOR.MINOR" version into its numbers. Both are
// decimal without leading zeros (or exactly "0") and at most 9 digits.
func ParseSchemaVersion(v string) (major, minor int, err error) {
	maj, min, ok := strings.Cut(v, ".")
	if !ok {
		return 0, 0, fmt.Errorf("schema version %q is not MAJOR.MINOR (e.g. \"1.0\")", v)
	}
	if major, ok = versionNumber(maj); !ok {
		return 0, 0, fmt.Errorf("schema version %q: major %q is not a number without leading zeros", v, maj)
	}
	if minor, ok = versionNumber(min); !ok {
		return 0, 0, fmt.Errorf("schema version %q: minor %q is not a number without leading zeros", v, min)
	}
	return major, minor, nil
}

func versionNumber(s string) (int, bool) {
	if s == "" || len(s) > 9 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}
