package relay

import (
	"time"

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
		Attribute{CETime, e.OccurredAt.UTC().Format(time.RFC3339Nano)},
		Attribute{CEAggregateType, e.AggregateType},
		Attribute{CESchemaVersion, e.SchemaVersion},
	)
	if e.TenantID != "" {
		attrs = append(attrs, Attribute{CETenantID, e.TenantID})
	}
	return attrs
}
