package sink

import (
	"github.com/outboxrelay/outbox/sdk/pgtime"
	"github.com/outboxrelay/outbox/sdk/wire"
)

// CloudEvents attribute names (CloudEvents 1.0, without a binding's prefix),
// as sdk/wire defines them for the sinks and the SDK's readers.
const (
	CESpecVersion     = wire.AttrSpecVersion
	CEID              = wire.AttrID
	CESource          = wire.AttrSource
	CEType            = wire.AttrType
	CESubject         = wire.AttrSubject
	CETime            = wire.AttrTime
	CEDataContentType = wire.AttrDataContentType
	CEDataSchema      = wire.AttrDataSchema
	// Extensions carried by every message (lower-case alphanumerics, as the
	// spec requires of extension names).
	CEAggregateType = wire.AttrAggregateType
	CESchemaVersion = wire.AttrSchemaVersion
	CETenantID      = wire.AttrTenantID
	// CEOccurredAt carries occurred_at instead of CETime when RFC 3339
	// cannot: 'infinity', '-infinity', or a year outside 0000-9999 (see
	// TimeAttribute).
	CEOccurredAt = wire.AttrOccurredAt
)

// Attribute is one CloudEvents context attribute.
type Attribute struct{ Name, Value string }

// CloudEvents returns the CloudEvents 1.0 context attributes of m, except
// datacontenttype, which every binding maps to its own content-type field (see
// Event.ContentType). Sinks add their protocol binding's prefix to each name.
func CloudEvents(m *Message) []Attribute {
	e := m.Event
	attrs := make([]Attribute, 0, 8)
	attrs = append(attrs,
		Attribute{CESpecVersion, "1.0"},
		Attribute{CEID, e.ID.String()},
		Attribute{CESource, m.Source},
		Attribute{CEType, e.EventType},
		Attribute{CESubject, e.AggregateID},
		TimeAttribute(e),
		Attribute{CEAggregateType, e.AggregateType},
		Attribute{CESchemaVersion, e.SchemaVersion},
	)
	if e.TenantID != "" {
		attrs = append(attrs, Attribute{CETenantID, e.TenantID})
	}
	return attrs
}

// TimeAttribute returns the attribute that carries e's occurred_at: time,
// RFC 3339 in UTC with nanoseconds, for a finite value in the years
// 0000-9999; otherwise the extension occurredat with its lossless text:
// "infinity", "-infinity", or ISO 8601's expanded form with a sign and six
// year digits ("+294276-12-31T23:59:59.999999Z", "-004712-01-01T00:00:00Z"
// for 4713 BC). The time attribute is optional in CloudEvents, and a value
// it cannot hold is never sent in it: consumers that parse it as RFC 3339
// keep working.
func TimeAttribute(e *Event) Attribute {
	if pgtime.RFC3339(e.OccurredAt, e.OccurredAtInf) {
		return Attribute{CETime, pgtime.Format(e.OccurredAt, e.OccurredAtInf)}
	}
	return Attribute{CEOccurredAt, pgtime.Format(e.OccurredAt, e.OccurredAtInf)}
}
