package versions_test

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/history"
	"github.com/outboxrelay/outbox/sdk/internal/exampledb"
	"github.com/outboxrelay/outbox/sdk/internal/testdb"
	"github.com/outboxrelay/outbox/sdk/versions"
)

func TestMain(m *testing.M) { exampledb.Main(m) }

// Three versions of order.created: 1.1 adds a currency (a compatible, minor
// change), 2.0 replaces the float amount by integer cents (a breaking one).
type orderCreatedV10 struct {
	ID     string  `json:"id"`
	Amount float64 `json:"amount"`
}

type orderCreatedV11 struct {
	ID       string  `json:"id"`
	Amount   float64 `json:"amount"`
	Currency string  `json:"currency"`
}

type orderCreatedV20 struct {
	ID         string `json:"id"`
	TotalCents int64  `json:"total_cents"`
	Currency   string `json:"currency"`
}

func (orderCreatedV10) EventType() string     { return "order.created" }
func (orderCreatedV10) SchemaVersion() string { return "1.0" }
func (orderCreatedV11) EventType() string     { return "order.created" }
func (orderCreatedV11) SchemaVersion() string { return "1.1" }
func (orderCreatedV20) EventType() string     { return "order.created" }
func (orderCreatedV20) SchemaVersion() string { return "2.0" }

// orderCreatedV30 stands for a writer deployed before its readers.
type orderCreatedV30 struct {
	ID string `json:"id"`
}

func (orderCreatedV30) EventType() string     { return "order.created" }
func (orderCreatedV30) SchemaVersion() string { return "3.0" }

func registry(t *testing.T) *versions.Registry {
	t.Helper()
	r := versions.NewRegistry()
	if err := versions.Register[orderCreatedV20](r); err != nil {
		t.Fatal(err)
	}
	if err := versions.Upcast(r, func(v orderCreatedV10) (orderCreatedV11, error) {
		return orderCreatedV11{ID: v.ID, Amount: v.Amount, Currency: "USD"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := versions.Upcast(r, func(v orderCreatedV11) (orderCreatedV20, error) {
		return orderCreatedV20{ID: v.ID, TotalCents: int64(math.Round(v.Amount * 100)), Currency: v.Currency}, nil
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestWrittenVersionsReadAsNewest writes order.created at 1.0, 1.1 and 2.0
// through the SDK, loads them back from the database, and decodes each into
// the 2.0 type; a 3.0 event fails with the typed error.
func TestWrittenVersionsReadAsNewest(t *testing.T) {
	t.Parallel()
	ob := testdb.New(t)
	ctx := context.Background()
	w, err := sdk.New(&sdk.Config{Schema: ob.Schema})
	if err != nil {
		t.Fatal(err)
	}
	var events []sdk.Event
	for _, v := range []sdk.Versioned{
		orderCreatedV10{ID: "o-1", Amount: 12.34},
		orderCreatedV11{ID: "o-2", Amount: 5, Currency: "EUR"},
		orderCreatedV20{ID: "o-3", TotalCents: 999, Currency: "GBP"},
		orderCreatedV30{ID: "o-4"},
	} {
		e, err := sdk.NewEvent("order", "all", v)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	if err := pgx.BeginFunc(ctx, ob.Pool, func(tx pgx.Tx) error { return w.WriteBatch(ctx, tx, events) }); err != nil {
		t.Fatal(err)
	}

	r := registry(t)
	l, _ := history.New(&history.Config{Schema: ob.Schema})
	var got []orderCreatedV20
	var stored []string
	var errs []error
	err = l.Load(ctx, ob.Pool, "order", "all", history.Cursor{}, func(rec history.Record) error {
		stored = append(stored, rec.SchemaVersion)
		v, err := versions.DecodeEvent[orderCreatedV20](r, rec.Event)
		got, errs = append(got, v), append(errs, err)
		// The untyped form gives the same value.
		if a, err2 := r.Decode(rec.EventType, rec.SchemaVersion, rec.Payload); err == nil && (err2 != nil || a != any(v)) {
			t.Errorf("Registry.Decode = %v, %v; want %v", a, err2, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []orderCreatedV20{
		{ID: "o-1", TotalCents: 1234, Currency: "USD"},
		{ID: "o-2", TotalCents: 500, Currency: "EUR"},
		{ID: "o-3", TotalCents: 999, Currency: "GBP"},
	}
	if len(stored) != 4 || stored[0] != "1.0" || stored[1] != "1.1" || stored[2] != "2.0" || stored[3] != "3.0" {
		t.Fatalf("stored versions %v, want 1.0 1.1 2.0 3.0", stored)
	}
	for i, w := range want {
		if errs[i] != nil || got[i] != w {
			t.Errorf("version %s decoded as %+v, %v; want %+v", stored[i], got[i], errs[i], w)
		}
	}
	var ve *versions.VersionError
	if !errors.As(errs[3], &ve) || !errors.Is(errs[3], versions.ErrUnknownMajor) || ve.Version != "3.0" || ve.Reader != "2.0" {
		t.Errorf("3.0 read by a 2.0 reader: %v, want a *VersionError with ErrUnknownMajor", errs[3])
	}
}

func TestMinorVersions(t *testing.T) {
	t.Parallel()
	r := registry(t)
	// A newer minor of the reader's own major: decoded directly, the unknown
	// field ignored.
	v, err := versions.Decode[orderCreatedV20](r, "order.created", "2.7", []byte(`{"id":"a","total_cents":5,"currency":"EUR","coupon":"X"}`))
	if err != nil || v != (orderCreatedV20{ID: "a", TotalCents: 5, Currency: "EUR"}) {
		t.Errorf("2.7 read by 2.0: %+v, %v", v, err)
	}
	// A newer minor of an older major that no upcaster names: the nearest
	// upcaster of that major (1.1 -> 2.0) reads it.
	v, err = versions.Decode[orderCreatedV20](r, "order.created", "1.4", []byte(`{"id":"b","amount":1.5,"currency":"CHF","note":"x"}`))
	if err != nil || v != (orderCreatedV20{ID: "b", TotalCents: 150, Currency: "CHF"}) {
		t.Errorf("1.4 read by 2.0: %+v, %v", v, err)
	}
	// A reader at 1.1 reads 1.0 through the minor upcaster (which fills in
	// the currency), and 1.3 directly.
	v11, err := versions.Decode[orderCreatedV11](r, "order.created", "1.0", []byte(`{"id":"c","amount":2}`))
	if err != nil || v11 != (orderCreatedV11{ID: "c", Amount: 2, Currency: "USD"}) {
		t.Errorf("1.0 read by 1.1: %+v, %v", v11, err)
	}
	v11, err = versions.Decode[orderCreatedV11](r, "order.created", "1.3", []byte(`{"id":"d","amount":3,"currency":"JPY"}`))
	if err != nil || v11 != (orderCreatedV11{ID: "d", Amount: 3, Currency: "JPY"}) {
		t.Errorf("1.3 read by 1.1: %+v, %v", v11, err)
	}
	// Without any registry, same-major reads still work.
	v10, err := versions.Decode[orderCreatedV10](nil, "order.created", "1.9", []byte(`{"id":"e","amount":4}`))
	if err != nil || v10 != (orderCreatedV10{ID: "e", Amount: 4}) {
		t.Errorf("1.9 read by 1.0 without a registry: %+v, %v", v10, err)
	}
	ver, p, err := r.Upgrade("order.created", "1.0", "2.0", []byte(`{"id":"f","amount":0.1}`))
	if err != nil || ver != "2.0" || string(p) != `{"id":"f","total_cents":10,"currency":"USD"}` {
		t.Errorf("Upgrade = %s %s %v", ver, p, err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	r := registry(t)
	cases := []struct {
		name, typ, version, payload string
		target                      error
	}{
		{"newer major", "order.created", "3.0", `{}`, versions.ErrUnknownMajor},
		{"older major without upcaster", "order.created", "0.9", `{}`, versions.ErrNoUpcaster},
		{"bad version", "order.created", "two", `{}`, versions.ErrInvalidVersion},
		{"other event type", "order.paid", "2.0", `{}`, versions.ErrWrongType},
		{"bad payload", "order.created", "2.0", `{"total_cents":"x"}`, versions.ErrDecode},
		{"upcaster fails on bad payload", "order.created", "1.0", `[]`, versions.ErrDecode},
	}
	for _, c := range cases {
		_, err := versions.Decode[orderCreatedV20](r, c.typ, c.version, []byte(c.payload))
		var ve *versions.VersionError
		if !errors.As(err, &ve) || !errors.Is(err, c.target) {
			t.Errorf("%s: %v, want %v", c.name, err, c.target)
		}
	}
	if _, err := r.Decode("order.unknown", "1.0", []byte(`{}`)); !errors.Is(err, versions.ErrUnknownEventType) {
		t.Errorf("Registry.Decode of an unregistered type: %v", err)
	}
	// Registration mistakes are refused.
	if err := r.AddUpcaster("order.created", "2.0", "1.0", nil); err == nil {
		t.Error("a downgrading upcaster was accepted")
	}
	if err := r.AddUpcaster("order.created", "1.0", "1.2", nil); err == nil {
		t.Error("a second upcaster from 1.0 was accepted")
	}
	if err := r.AddUpcaster("order.created", "1", "2.0", nil); err == nil {
		t.Error("an upcaster from a bad version was accepted")
	}
	if err := versions.Register[orderCreatedV10](r); err == nil {
		t.Error("a second Go type for order.created was accepted")
	}
}
