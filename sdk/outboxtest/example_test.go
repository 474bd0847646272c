package outboxtest_test

import (
	"context"
	"fmt"

	"github.com/outboxrelay/outbox/sdk"
	"github.com/outboxrelay/outbox/sdk/outboxtest"
)

// checkout is application code: it takes an sdk.EventWriter, so its unit
// tests can pass a Recorder instead of a database.
func checkout(ctx context.Context, w sdk.EventWriter, tx sdk.Tx, cartID string, total int) error {
	e := sdk.Event{AggregateType: "cart", AggregateID: cartID, EventType: "cart.checked_out",
		Payload: fmt.Appendf(nil, `{"total":%d}`, total)}
	return w.Write(ctx, tx, &e)
}

func ExampleRecorder() {
	rec, _ := outboxtest.NewRecorder(nil)
	if err := checkout(context.Background(), rec, nil, "c-1", 42); err != nil {
		panic(err)
	}
	// In a test: rec.AssertWritten(t, "cart.checked_out", outboxtest.JSONPayload(...))
	totalIs42 := outboxtest.JSONPayload(func(p struct{ Total int }) bool { return p.Total == 42 })
	for _, e := range rec.Events() {
		fmt.Println(e.EventType, e.AggregateID, string(e.Payload), totalIs42(e), e.ID.Version() == 7)
	}
	// Output:
	// cart.checked_out c-1 {"total":42} true true
}
