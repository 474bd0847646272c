// Package events holds the order events of the example orders service: the
// Go types the service writes (through sdk.NewEvent, which takes the event
// type and schema version from them) and the consumer decodes (through an
// sdk/versions registry).
package events

import "github.com/outboxrelay/outbox/sdk/versions"

// AggregateType is the aggregate type of every order event; the aggregate
// id is the order id, so one order's events stay in order.
const AggregateType = "order"

// Item is one line of an order.
type Item struct {
	SKU        string `json:"sku"`
	Quantity   int    `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
}

// OrderPlaced: a customer placed an order.
type OrderPlaced struct {
	OrderID    string `json:"order_id"`
	Customer   string `json:"customer"`
	Items      []Item `json:"items"`
	TotalCents int64  `json:"total_cents"`
}

func (OrderPlaced) EventType() string     { return "order.placed" }
func (OrderPlaced) SchemaVersion() string { return "1.0" }

// OrderPaid: the order was paid in full.
type OrderPaid struct {
	OrderID     string `json:"order_id"`
	Customer    string `json:"customer"`
	AmountCents int64  `json:"amount_cents"`
}

func (OrderPaid) EventType() string     { return "order.paid" }
func (OrderPaid) SchemaVersion() string { return "1.0" }

// OrderCancelled: the order was cancelled before payment.
type OrderCancelled struct {
	OrderID  string `json:"order_id"`
	Customer string `json:"customer"`
	Reason   string `json:"reason,omitempty"`
}

func (OrderCancelled) EventType() string     { return "order.cancelled" }
func (OrderCancelled) SchemaVersion() string { return "1.0" }

// Registry returns a registry that decodes every order event into its Go
// type (Registry.Decode returns an OrderPlaced, OrderPaid or OrderCancelled).
func Registry() *versions.Registry {
	r := versions.NewRegistry()
	for _, err := range []error{
		versions.Register[OrderPlaced](r),
		versions.Register[OrderPaid](r),
		versions.Register[OrderCancelled](r),
	} {
		if err != nil {
			panic(err) // the types above are valid; a failure is a bug here
		}
	}
	return r
}
