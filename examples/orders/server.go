package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/examples/orders/events"
	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/history"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
	"github.com/outboxrelay/outbox/sdk/versions"
)

// server is the orders HTTP API. Every state change updates the orders row
// and writes its event through the SDK in one transaction: the event is
// relayed if and only if the change committed.
type server struct {
	pool     *pgxpool.Pool
	outbox   sdk.EventWriter
	history  *history.Loader
	registry *versions.Registry
	orders   string // the quoted orders table
	logger   *slog.Logger
}

// newServer returns the API over pool; the outbox tables are in outboxSchema,
// the orders table in appSchema.
func newServer(pool *pgxpool.Pool, outboxSchema, appSchema string, logger *slog.Logger) (*server, error) {
	if err := outboxschema.ValidateName("app schema", appSchema); err != nil {
		return nil, err
	}
	w, err := sdk.New(&sdk.Config{Schema: outboxSchema})
	if err != nil {
		return nil, err
	}
	l, err := history.New(&history.Config{Schema: outboxSchema})
	if err != nil {
		return nil, err
	}
	return &server{pool: pool, outbox: w, history: l, registry: events.Registry(),
		orders: outboxschema.Quote(appSchema) + ".orders", logger: logger}, nil
}

// migrate creates the orders table if it does not exist.
func (s *server) migrate(ctx context.Context, appSchema string) error {
	_, err := s.pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+outboxschema.Quote(appSchema)+`;
CREATE TABLE IF NOT EXISTS `+s.orders+` (
  id          text        PRIMARY KEY,
  customer    text        NOT NULL,
  total_cents bigint      NOT NULL,
  status      text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
)`)
	return err
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", s.placeOrder)
	mux.HandleFunc("POST /orders/{id}/pay", s.payOrder)
	mux.HandleFunc("POST /orders/{id}/cancel", s.cancelOrder)
	mux.HandleFunc("GET /orders/{id}", s.getOrder)
	return mux
}

// httpError is an error with the status to answer.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if errors.As(err, &he) {
		writeJSON(w, he.status, map[string]string{"error": he.msg})
		return
	}
	s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "bad request body: %v", err)
	}
	return nil
}

type placeRequest struct {
	Customer string        `json:"customer"`
	Items    []events.Item `json:"items"`
}

func (req placeRequest) validate() error {
	if req.Customer == "" {
		return errorf(http.StatusBadRequest, "customer is required")
	}
	if len(req.Items) == 0 {
		return errorf(http.StatusBadRequest, "an order needs at least one item")
	}
	for i, it := range req.Items {
		if it.SKU == "" || it.Quantity < 1 || it.PriceCents < 0 {
			return errorf(http.StatusBadRequest, "items[%d]: needs a sku, a quantity of at least 1 and a price_cents of at least 0", i)
		}
	}
	return nil
}

// placeOrder inserts the order and writes order.placed in one transaction.
func (s *server) placeOrder(w http.ResponseWriter, r *http.Request) {
	var req placeRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := req.validate(); err != nil {
		s.fail(w, r, err)
		return
	}
	var total int64
	for _, it := range req.Items {
		total += int64(it.Quantity) * it.PriceCents
	}
	id := "ord-" + uuid.Must(uuid.NewV7()).String()
	var eventID uuid.UUID
	err := pgx.BeginFunc(r.Context(), s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(r.Context(), `INSERT INTO `+s.orders+` (id, customer, total_cents, status) VALUES ($1, $2, $3, 'placed')`,
			id, req.Customer, total); err != nil {
			return err
		}
		e, err := sdk.NewEvent(events.AggregateType, id, events.OrderPlaced{OrderID: id, Customer: req.Customer, Items: req.Items, TotalCents: total})
		if err != nil {
			return err
		}
		if err := s.outbox.Write(r.Context(), tx, &e); err != nil {
			return err
		}
		eventID = e.ID
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/orders/"+id)
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "status": "placed", "total_cents": total, "event_id": eventID})
}

// transition changes a placed order's status and writes the event that
// event returns, in one transaction. The row lock serialises concurrent
// changes of one order: a second payment waits, then finds the order paid.
func (s *server) transition(ctx context.Context, id, to string, event func(customer string, total int64) sdk.Versioned) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var customer, status string
		var total int64
		err := tx.QueryRow(ctx, `SELECT customer, total_cents, status FROM `+s.orders+` WHERE id = $1 FOR UPDATE`, id).Scan(&customer, &total, &status)
		if errors.Is(err, pgx.ErrNoRows) {
			return errorf(http.StatusNotFound, "no order %s", id)
		}
		if err != nil {
			return err
		}
		if status != "placed" {
			return errorf(http.StatusConflict, "order %s is %s; only a placed order can become %s", id, status, to)
		}
		if _, err := tx.Exec(ctx, `UPDATE `+s.orders+` SET status = $2, updated_at = now() WHERE id = $1`, id, to); err != nil {
			return err
		}
		e, err := sdk.NewEvent(events.AggregateType, id, event(customer, total))
		if err != nil {
			return err
		}
		return s.outbox.Write(ctx, tx, &e)
	})
}

func (s *server) payOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := s.transition(r.Context(), id, "paid", func(customer string, total int64) sdk.Versioned {
		return events.OrderPaid{OrderID: id, Customer: customer, AmountCents: total}
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": id, "status": "paid"})
}

func (s *server) cancelOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req struct {
		Reason string `json:"reason"`
	}
	if r.ContentLength != 0 {
		if err := decodeBody(w, r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	err := s.transition(r.Context(), id, "cancelled", func(customer string, _ int64) sdk.Versioned {
		return events.OrderCancelled{OrderID: id, Customer: customer, Reason: req.Reason}
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": id, "status": "cancelled"})
}

// Order is an order's state, rebuilt from its events.
type Order struct {
	ID           string        `json:"id"`
	Customer     string        `json:"customer"`
	Items        []events.Item `json:"items"`
	TotalCents   int64         `json:"total_cents"`
	PaidCents    int64         `json:"paid_cents"`
	Status       string        `json:"status"`
	CancelReason string        `json:"cancel_reason,omitempty"`
	History      []Change      `json:"history"`
}

// Change is one event of the order's history.
type Change struct {
	EventType string    `json:"event_type"`
	EventID   string    `json:"event_id"`
	At        time.Time `json:"at"`
}

// apply folds one event into the order.
func (o Order) apply(reg *versions.Registry, r history.Record) (Order, error) {
	v, err := reg.Decode(r.EventType, r.SchemaVersion, r.Payload)
	if err != nil {
		return o, err
	}
	switch e := v.(type) {
	case events.OrderPlaced:
		o.ID, o.Customer, o.Items, o.TotalCents, o.Status = e.OrderID, e.Customer, e.Items, e.TotalCents, "placed"
	case events.OrderPaid:
		o.PaidCents += e.AmountCents
		o.Status = "paid"
	case events.OrderCancelled:
		o.Status, o.CancelReason = "cancelled", e.Reason
	}
	o.History = append(o.History, Change{EventType: r.EventType, EventID: r.ID.String(), At: r.OccurredAt})
	return o, nil
}

// rebuild folds the order's events, read in one REPEATABLE READ transaction
// so every page sees the same history.
func (s *server) rebuild(ctx context.Context, id string) (Order, error) {
	var o Order
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		o, err = history.Fold(ctx, s.history, tx, events.AggregateType, id, Order{}, func(o Order, r history.Record) (Order, error) {
			return o.apply(s.registry, r)
		})
		return err
	})
	return o, err
}

// getOrder answers with the order's state rebuilt from its events (not read
// from the orders row).
func (s *server) getOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	o, err := s.rebuild(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(o.History) == 0 {
		s.fail(w, r, errorf(http.StatusNotFound, "no order %s", id))
		return
	}
	writeJSON(w, http.StatusOK, o)
}
