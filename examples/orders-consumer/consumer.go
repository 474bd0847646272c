package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/examples/orders/events"
	"github.com/outboxrelay/outbox/sdk/inbox"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
	"github.com/outboxrelay/outbox/sdk/versions"
)

// consumer keeps per-customer order totals in its own database, applying each
// order event exactly once through the inbox.
type consumer struct {
	pool     *pgxpool.Pool
	inbox    *inbox.Inbox
	registry *versions.Registry
	name     string // the consumer's name in the inbox
	totals   string // the quoted customer_totals table
}

// newConsumer checks that the inbox is installed in schema and creates the
// consumer's own table there.
func newConsumer(ctx context.Context, pool *pgxpool.Pool, schema, name string) (*consumer, error) {
	ib, err := inbox.New(&inbox.Config{Schema: schema})
	if err != nil {
		return nil, err
	}
	var ok bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", outboxschema.Quote(schema)+"."+inbox.Table).Scan(&ok); err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("no inbox table in schema %s: install it with `outbox migrate inbox up --schema %s` (or inbox.Migrate)", schema, schema)
	}
	c := &consumer{pool: pool, inbox: ib, registry: events.Registry(), name: name, totals: outboxschema.Quote(schema) + ".customer_totals"}
	_, err = pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+c.totals+` (
  customer        text   PRIMARY KEY,
  orders          int    NOT NULL DEFAULT 0,
  placed_cents    bigint NOT NULL DEFAULT 0,
  paid_cents      bigint NOT NULL DEFAULT 0,
  cancelled       int    NOT NULL DEFAULT 0
)`)
	return c, err
}

// handled says what became of one message.
type handled struct {
	env     inbox.Envelope
	applied bool   // false: the inbox had it already, nothing ran
	summary string // what apply did
}

// handle reads one message as the relay wrote it (CloudEvents in ce- headers)
// and applies it in one transaction with its inbox record. Acknowledge the
// message only after handle returned nil; an error wrapping
// inbox.ErrNotAnEvent means the message can never be applied.
func (c *consumer) handle(ctx context.Context, header map[string][]string, data []byte) (handled, error) {
	env, err := inbox.FromNATS(header, data)
	if err != nil {
		return handled{}, err
	}
	h := handled{env: env}
	ctx = env.TraceContext(ctx) // spans started here continue the writer's trace
	err = pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		var err error
		h.applied, err = inbox.Handle(ctx, c.inbox, tx, c.name, env.ID, func(ctx context.Context, tx pgx.Tx) error {
			h.summary, err = c.apply(ctx, tx, env)
			return err
		})
		return err
	})
	if err != nil {
		return h, fmt.Errorf("%s %s: %w", env.EventType, env.ID, err)
	}
	return h, nil
}

// apply is the consumer's work for one event, in the inbox's transaction.
// The totals are sums, so they do not depend on the order events arrive in.
func (c *consumer) apply(ctx context.Context, tx pgx.Tx, env inbox.Envelope) (string, error) {
	v, err := c.registry.Decode(env.EventType, env.SchemaVersion, env.Payload)
	if errors.Is(err, versions.ErrUnknownEventType) {
		return "not an event this consumer uses", nil
	}
	if err != nil {
		return "", err
	}
	upsert := func(customer, set string, args ...any) error {
		_, err := tx.Exec(ctx, `INSERT INTO `+c.totals+` (customer) VALUES ($1) ON CONFLICT DO NOTHING`, customer)
		if err == nil {
			_, err = tx.Exec(ctx, `UPDATE `+c.totals+` SET `+set+` WHERE customer = $1`, append([]any{customer}, args...)...)
		}
		return err
	}
	switch e := v.(type) {
	case events.OrderPlaced:
		return fmt.Sprintf("%s placed %s for %s", e.Customer, e.OrderID, money(e.TotalCents)),
			upsert(e.Customer, "orders = orders + 1, placed_cents = placed_cents + $2", e.TotalCents)
	case events.OrderPaid:
		return fmt.Sprintf("%s paid %s for %s", e.Customer, e.OrderID, money(e.AmountCents)),
			upsert(e.Customer, "paid_cents = paid_cents + $2", e.AmountCents)
	case events.OrderCancelled:
		return fmt.Sprintf("%s cancelled %s", e.Customer, e.OrderID),
			upsert(e.Customer, "cancelled = cancelled + 1")
	}
	return "", fmt.Errorf("no case for %T", v)
}

func money(cents int64) string { return fmt.Sprintf("$%d.%02d", cents/100, cents%100) }

// customerTotal is one row of customer_totals.
type customerTotal struct {
	Customer               string
	Orders, Cancelled      int
	PlacedCents, PaidCents int64
}

func (c *consumer) customerTotals(ctx context.Context) ([]customerTotal, error) {
	rows, err := c.pool.Query(ctx, "SELECT customer, orders, placed_cents, paid_cents, cancelled FROM "+c.totals+" ORDER BY customer")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (customerTotal, error) {
		var t customerTotal
		err := r.Scan(&t.Customer, &t.Orders, &t.PlacedCents, &t.PaidCents, &t.Cancelled)
		return t, err
	})
}

func printTotals(w io.Writer, ts []customerTotal) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CUSTOMER\tORDERS\tPLACED\tPAID\tCANCELLED")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\n", t.Customer, t.Orders, money(t.PlacedCents), money(t.PaidCents), t.Cancelled)
	}
	tw.Flush()
}
