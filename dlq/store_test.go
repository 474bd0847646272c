package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxrelay/outbox/dlq"
	"github.com/outboxrelay/outbox/internal/testutil"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type bundle struct {
	o     *testutil.Outbox
	store *dlq.Store
}

func setup(t *testing.T) *bundle {
	t.Helper()
	o := testutil.NewOutbox(t)
	s, err := dlq.New(o.Pool, o.Schema)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{o: o, store: s}
}

// row is a dead letter to insert; zero fields get defaults.
type row struct {
	id        int64
	eventID   uuid.UUID
	aggType   string
	aggID     string
	eventType string
	route     string
	status    dlq.Status
	failedAt  time.Time
	payload   string
	headers   string
	errors    string
}

func (b *bundle) insert(t *testing.T, rows ...row) {
	t.Helper()
	for _, r := range rows {
		if r.eventID == uuid.Nil {
			r.eventID = uuid.MustParse(fmt.Sprintf("00000000-0000-7000-8000-%012d", r.id))
		}
		r.aggType = or(r.aggType, "order")
		r.aggID = or(r.aggID, fmt.Sprintf("o-%d", r.id))
		r.eventType = or(r.eventType, "order.created")
		r.route = or(r.route, "orders")
		r.status = or(r.status, dlq.StatusNone)
		r.payload = or(r.payload, `{"n":1}`)
		r.headers = or(r.headers, `{}`)
		r.errors = or(r.errors, `["2026-03-01T12:00:00Z boom"]`)
		if r.failedAt.IsZero() {
			r.failedAt = t0.Add(time.Duration(r.id) * time.Minute)
		}
		_, err := b.o.Pool.Exec(context.Background(), `INSERT INTO `+b.o.Schema+`.dead_letters
		  (id, event_id, aggregate_type, aggregate_id, event_type, schema_version, payload, content_type, headers,
		   occurred_at, created_at, route, sink, destination, attempts, last_error, errors, first_failed_at, last_failed_at, replay_status)
		  OVERRIDING SYSTEM VALUE
		  VALUES ($1, $2, $3, $4, $5, '1.0', $6, 'application/json', $7, $8, $8, $9, 'bus', 'orders.x', 3, 'boom', $10, $8, $8, $11)`,
			r.id, r.eventID, r.aggType, r.aggID, r.eventType, []byte(r.payload), r.headers, r.failedAt, r.route, r.errors, string(r.status))
		if err != nil {
			t.Fatalf("insert dead letter %d: %v", r.id, err)
		}
	}
}

func (b *bundle) status(t *testing.T, id int64) (dlq.Status, *time.Time) {
	t.Helper()
	var s string
	var at *time.Time
	if err := b.o.Pool.QueryRow(context.Background(), `SELECT replay_status, replay_requested_at FROM `+b.o.Schema+`.dead_letters WHERE id = $1`, id).Scan(&s, &at); err != nil {
		t.Fatal(err)
	}
	return dlq.Status(s), at
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func letterIDs(ls []dlq.Letter) []int64 {
	out := []int64{}
	for _, l := range ls {
		out = append(out, l.ID)
	}
	return out
}

func TestNewRejectsBadSchema(t *testing.T) {
	t.Parallel()
	if _, err := dlq.New(nil, "x"); err == nil {
		t.Error("nil DB accepted")
	}
	o := testutil.NewOutbox(t)
	if _, err := dlq.New(o.Pool, `x"; DROP TABLE y; --`); err == nil {
		t.Error("bad schema name accepted")
	}
}

func TestListFilters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ev := uuid.MustParse("0190aaaa-0000-7000-8000-000000000001")
	b.insert(t,
		row{id: 1, route: "orders", eventType: "order.created", aggID: "o-1"},
		row{id: 2, route: "orders", eventType: "order.paid", aggID: "o-1", status: dlq.StatusFailed},
		row{id: 3, route: "payments", eventType: "payment.failed", aggType: "payment", aggID: "p-1", eventID: ev},
		row{id: 4, route: "audit", eventType: "payment.failed", aggType: "payment", aggID: "p-1", eventID: ev, status: dlq.StatusReplayed},
		row{id: 5, route: "orders", eventType: "order/odd", aggID: "o-9"},
	)
	cases := []struct {
		name string
		f    dlq.Filter
		want []int64
	}{
		{"all", dlq.Filter{}, []int64{1, 2, 3, 4, 5}},
		{"route", dlq.Filter{Route: "orders"}, []int64{1, 2, 5}},
		{"event type exact", dlq.Filter{EventType: "order.paid"}, []int64{2}},
		{"event type glob", dlq.Filter{EventType: "order.*"}, []int64{1, 2}},
		{"event type glob is not a regexp", dlq.Filter{EventType: "order.c?eated"}, []int64{1}},
		{"event type class", dlq.Filter{EventType: "[op]*.[cf]*"}, []int64{1, 3, 4}},
		{"aggregate type", dlq.Filter{AggregateType: "payment"}, []int64{3, 4}},
		{"aggregate", dlq.Filter{AggregateType: "order", AggregateID: "o-1"}, []int64{1, 2}},
		{"event id", dlq.Filter{EventID: ev}, []int64{3, 4}},
		{"since", dlq.Filter{Since: t0.Add(3 * time.Minute)}, []int64{3, 4, 5}},
		{"until", dlq.Filter{Until: t0.Add(3 * time.Minute)}, []int64{1, 2}},
		{"since and until", dlq.Filter{Since: t0.Add(2 * time.Minute), Until: t0.Add(4 * time.Minute)}, []int64{2, 3}},
		{"status", dlq.Filter{Status: dlq.StatusFailed}, []int64{2}},
		{"ids", dlq.Filter{IDs: []int64{4, 1}}, []int64{1, 4}},
		{"limit", dlq.Filter{Route: "orders", Limit: 2}, []int64{1, 2}},
		{"combined", dlq.Filter{Route: "orders", EventType: "order.*", Status: dlq.StatusNone}, []int64{1}},
		{"nothing", dlq.Filter{Route: "nope"}, []int64{}},
	}
	for _, tc := range cases {
		got, err := b.store.List(context.Background(), tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if g := letterIDs(got); !slices.Equal(g, tc.want) {
			t.Errorf("%s: got ids %v, want %v", tc.name, g, tc.want)
		}
	}
	// Ids that do not exist: an error naming them, as for replay and purge
	// (a script asking for one row learns it is gone).
	_, err := b.store.List(context.Background(), dlq.Filter{IDs: []int64{1, 99, 98}})
	var nf *dlq.NotFoundError
	if !errors.As(err, &nf) || !slices.Equal(nf.IDs, []int64{98, 99}) {
		t.Errorf("List of ids 1, 99, 98: %v, want a NotFoundError naming 98, 99", err)
	}
}

func TestFilterValidate(t *testing.T) {
	t.Parallel()
	bad := []dlq.Filter{
		{EventType: "order.[*"},
		{AggregateID: "o-1"},
		{Since: t0, Until: t0},
		{Status: "done"},
		{Limit: -1},
		{IDs: []int64{0}},
	}
	for _, f := range bad {
		if err := f.Validate(); !errors.Is(err, dlq.ErrBadFilter) {
			t.Errorf("%+v: got %v, want ErrBadFilter", f, err)
		}
	}
	for _, s := range []string{"", ":x", "order:"} {
		if _, _, err := dlq.ParseAggregate(s); err == nil {
			t.Errorf("ParseAggregate(%q) accepted", s)
		}
	}
	typ, id, err := dlq.ParseAggregate("order:o:42")
	if err != nil || typ != "order" || id != "o:42" {
		t.Errorf("ParseAggregate(order:o:42) = %q, %q, %v", typ, id, err)
	}
}

func TestGet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insert(t, row{id: 7, payload: `{"total": 120}`, headers: `{"traceparent": "00-abc-def-01", "n": 5}`,
		errors: `["2026-03-01T12:00:00Z first", "2026-03-01T12:00:01Z second", {"odd": true}]`})
	l, err := b.store.Get(context.Background(), 7)
	if err != nil {
		t.Fatal(err)
	}
	if string(l.Payload) != `{"total": 120}` || l.Route != "orders" || l.Attempts != 3 || l.ReplayStatus != dlq.StatusNone {
		t.Errorf("got %+v", l)
	}
	if l.Headers["traceparent"] != "00-abc-def-01" || l.Headers["n"] != "5" {
		t.Errorf("headers %v", l.Headers)
	}
	if want := []string{"2026-03-01T12:00:00Z first", "2026-03-01T12:00:01Z second", `{"odd": true}`}; !slices.Equal(l.Errors, want) {
		t.Errorf("errors %q, want %q", l.Errors, want)
	}
	_, err = b.store.Get(context.Background(), 8)
	var nf *dlq.NotFoundError
	if !errors.As(err, &nf) || !errors.Is(err, dlq.ErrNotFound) || nf.IDs[0] != 8 {
		t.Errorf("unknown id: %v", err)
	}
}

func TestRequestReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.insert(t,
		row{id: 1}, row{id: 2, status: dlq.StatusFailed}, row{id: 3, status: dlq.StatusRequested},
		row{id: 4, status: dlq.StatusDelivering}, row{id: 5, status: dlq.StatusReplayed},
		row{id: 6, route: "other"},
	)

	// Dry run: reports, changes nothing.
	res, err := b.store.RequestReplay(ctx, dlq.Filter{Route: "orders"}, dlq.ReplayOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || !slices.Equal(res.IDs(), []int64{1, 2}) || !slices.Equal(letterIDs(res.InProgress), []int64{3, 4}) || !slices.Equal(letterIDs(res.Replayed), []int64{5}) {
		t.Fatalf("dry run: %+v", res)
	}
	if st, at := b.status(t, 1); st != dlq.StatusNone || at != nil {
		t.Fatalf("dry run changed row 1: %s %v", st, at)
	}

	// Unknown id: nothing changes.
	_, err = b.store.RequestReplay(ctx, dlq.Filter{IDs: []int64{1, 99, 98}}, dlq.ReplayOptions{})
	var nf *dlq.NotFoundError
	if !errors.As(err, &nf) || !slices.Equal(nf.IDs, []int64{98, 99}) {
		t.Fatalf("unknown ids: %v", err)
	}
	if st, _ := b.status(t, 1); st != dlq.StatusNone {
		t.Fatalf("row 1 changed by a failed request: %s", st)
	}

	res, err = b.store.RequestReplay(ctx, dlq.Filter{Route: "orders"}, dlq.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.DryRun || !slices.Equal(res.IDs(), []int64{1, 2}) || !slices.Equal(letterIDs(res.InProgress), []int64{3, 4}) || !slices.Equal(letterIDs(res.Replayed), []int64{5}) {
		t.Fatalf("replay: %+v", res)
	}
	for _, id := range []int64{1, 2} {
		if st, at := b.status(t, id); st != dlq.StatusRequested || at == nil {
			t.Errorf("row %d: %s %v", id, st, at)
		}
	}
	if st, _ := b.status(t, 5); st != dlq.StatusReplayed {
		t.Errorf("row 5 requested without Again: %s", st)
	}
	if st, _ := b.status(t, 6); st != dlq.StatusNone {
		t.Errorf("row 6 of another route changed: %s", st)
	}

	// Asking again: everything is in progress now, nothing is requested twice.
	res, err = b.store.RequestReplay(ctx, dlq.Filter{Route: "orders"}, dlq.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Requested) != 0 || !slices.Equal(letterIDs(res.InProgress), []int64{1, 2, 3, 4}) {
		t.Fatalf("second replay: %+v", res)
	}

	// Again includes replayed rows.
	res, err = b.store.RequestReplay(ctx, dlq.Filter{IDs: []int64{5}}, dlq.ReplayOptions{Again: true})
	if err != nil || !slices.Equal(res.IDs(), []int64{5}) {
		t.Fatalf("again: %+v, %v", res, err)
	}

	// Status filters make no sense for a replay.
	if _, err := b.store.RequestReplay(ctx, dlq.Filter{Status: dlq.StatusFailed}, dlq.ReplayOptions{}); !errors.Is(err, dlq.ErrBadFilter) {
		t.Errorf("status filter: %v", err)
	}
}

func TestRequestReplayLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insert(t, row{id: 1, status: dlq.StatusRequested}, row{id: 2}, row{id: 3}, row{id: 4})
	res, err := b.store.RequestReplay(context.Background(), dlq.Filter{Limit: 2}, dlq.ReplayOptions{DryRun: true})
	if err != nil || !slices.Equal(res.IDs(), []int64{2, 3}) {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	res, err = b.store.RequestReplay(context.Background(), dlq.Filter{Limit: 2}, dlq.ReplayOptions{})
	if err != nil || !slices.Equal(res.IDs(), []int64{2, 3}) {
		t.Fatalf("replay: %+v %v", res, err)
	}
	if st, _ := b.status(t, 4); st != dlq.StatusNone {
		t.Errorf("row 4 beyond the limit: %s", st)
	}
}

// TestConcurrentReplaysRequestEachRowOnce runs many replays of the same rows at
// once: each row must be requested by exactly one of them.
func TestConcurrentReplaysRequestEachRowOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n, operators = 300, 8
	_, err := b.o.Pool.Exec(context.Background(), `INSERT INTO `+b.o.Schema+`.dead_letters
	  (event_id, aggregate_type, aggregate_id, event_type, schema_version, payload, content_type,
	   occurred_at, created_at, route, sink, destination, attempts, last_error, first_failed_at, last_failed_at, replay_status)
	  SELECT gen_random_uuid(), 'order', 'o-' || i, 'order.created', '1.0', '{}', 'application/json',
	   now(), now(), 'orders', 'bus', 'x', 1, 'boom', now(), now(), CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'none' END
	  FROM generate_series(1, $1) AS i`, n)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		var mu sync.Mutex
		requested := map[int64]int{}
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, operators)
		for range operators {
			wg.Go(func() {
				<-start
				res, err := b.store.RequestReplay(context.Background(), dlq.Filter{Route: "orders"}, dlq.ReplayOptions{Again: true})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, id := range res.IDs() {
					requested[id]++
				}
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(requested) != n {
			t.Fatalf("round %d: %d rows requested, want %d", round, len(requested), n)
		}
		for id, c := range requested {
			if c != 1 {
				t.Fatalf("round %d: row %d requested by %d operators", round, id, c)
			}
		}
		// A relay finishes them; the next round replays them again.
		if _, err := b.o.Pool.Exec(context.Background(), `UPDATE `+b.o.Schema+`.dead_letters SET replay_status = 'replayed'`); err != nil {
			t.Fatal(err)
		}
	}
}

// fakeRelay plays the relay's side of the protocol: it claims requested rows
// and finishes them, failing the ids in fail.
func fakeRelay(ctx context.Context, t *testing.T, b *bundle, fail map[int64]bool) {
	tbl := b.o.Schema + ".dead_letters"
	for ctx.Err() == nil {
		rows, err := b.o.Pool.Query(ctx, `UPDATE `+tbl+` SET replay_status = 'delivering' WHERE replay_status = 'requested' RETURNING id`)
		if err != nil {
			return
		}
		var claimed []int64
		for rows.Next() {
			var id int64
			rows.Scan(&id)
			claimed = append(claimed, id)
		}
		rows.Close()
		for _, id := range claimed {
			time.Sleep(20 * time.Millisecond)
			if fail[id] {
				b.o.Pool.Exec(ctx, `UPDATE `+tbl+` SET replay_status = 'failed', attempts = attempts + 1, last_error = 'still broken',
				  last_failed_at = now(), errors = errors || '["still broken"]' WHERE id = $1`, id)
			} else {
				b.o.Pool.Exec(ctx, `UPDATE `+tbl+` SET replay_status = 'replayed', replayed_at = now(), replay_count = replay_count + 1 WHERE id = $1`, id)
			}
		}
		time.Sleep(30 * time.Millisecond)
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insert(t, row{id: 1}, row{id: 2}, row{id: 3, status: dlq.StatusFailed}, row{id: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err := b.store.RequestReplay(ctx, dlq.Filter{IDs: []int64{1, 2, 3}}, dlq.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fakeRelay(ctx, t, b, map[int64]bool{2: true})
	}()
	defer func() { cancel(); <-done }()

	var seen []int64
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	outs, err := b.store.Wait(wctx, res.IDs(), &dlq.WaitOptions{Poll: 20 * time.Millisecond, OnOutcome: func(o dlq.Outcome) { seen = append(seen, o.ID) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 3 || len(seen) != 3 {
		t.Fatalf("outcomes %+v", outs)
	}
	for _, o := range outs {
		switch o.ID {
		case 2:
			if !o.Failed() || o.ReplayStatus != dlq.StatusFailed || o.Attempts != 4 || o.LastError != "still broken" {
				t.Errorf("row 2: %+v", o)
			}
		default:
			if o.Failed() || o.ReplayCount != 1 || o.ReplayedAt == nil {
				t.Errorf("row %d: %+v", o.ID, o)
			}
		}
	}
}

func TestWaitTimeoutAndGone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insert(t, row{id: 1}, row{id: 2})
	ctx := context.Background()
	if _, err := b.store.RequestReplay(ctx, dlq.Filter{}, dlq.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	// Nobody relays: the wait times out, naming the pending rows.
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	outs, err := b.store.Wait(wctx, []int64{1, 2}, &dlq.WaitOptions{Poll: 20 * time.Millisecond})
	var we *dlq.WaitError
	if !errors.As(err, &we) || !errors.Is(err, context.DeadlineExceeded) || len(outs) != 0 || !slices.Equal(letterIDs(we.Pending), []int64{1, 2}) {
		t.Fatalf("timeout: %v, %+v", err, outs)
	}
	if we.Pending[0].ReplayStatus != dlq.StatusRequested {
		t.Errorf("pending status %s", we.Pending[0].ReplayStatus)
	}
	// A row deleted meanwhile ends the wait for it as gone.
	if _, err := b.o.Pool.Exec(ctx, `DELETE FROM `+b.o.Schema+`.dead_letters WHERE id = 2`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.o.Pool.Exec(ctx, `UPDATE `+b.o.Schema+`.dead_letters SET replay_status = 'replayed' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	outs, err = b.store.Wait(ctx, []int64{1, 2}, nil)
	if err != nil || len(outs) != 2 {
		t.Fatalf("%v %+v", err, outs)
	}
	for _, o := range outs {
		if (o.ID == 2) != o.Gone || o.Failed() != (o.ID == 2) {
			t.Errorf("outcome %+v", o)
		}
	}
}

func TestPurge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.insert(t, row{id: 1}, row{id: 2, status: dlq.StatusReplayed}, row{id: 3, status: dlq.StatusRequested},
		row{id: 4, status: dlq.StatusDelivering}, row{id: 5, route: "other"}, row{id: 6, status: dlq.StatusFailed})
	count := func() int {
		var n int
		b.o.Pool.QueryRow(ctx, `SELECT count(*) FROM `+b.o.Schema+`.dead_letters`).Scan(&n)
		return n
	}

	res, err := b.store.Purge(ctx, dlq.Filter{Route: "orders"}, dlq.PurgeOptions{DryRun: true})
	if err != nil || !slices.Equal(letterIDs(res.Deleted), []int64{1, 2, 6}) || !slices.Equal(letterIDs(res.Skipped), []int64{3, 4}) || count() != 6 {
		t.Fatalf("dry run: %+v %v (rows %d)", res, err, count())
	}
	_, err = b.store.Purge(ctx, dlq.Filter{Route: "orders"}, dlq.PurgeOptions{Max: 1})
	var tm *dlq.TooManyError
	if !errors.As(err, &tm) || tm.Count != 3 || count() != 6 {
		t.Fatalf("max: %v (rows %d)", err, count())
	}
	_, err = b.store.Purge(ctx, dlq.Filter{IDs: []int64{1, 42}}, dlq.PurgeOptions{})
	if !errors.Is(err, dlq.ErrNotFound) || count() != 6 {
		t.Fatalf("unknown id: %v (rows %d)", err, count())
	}
	res, err = b.store.Purge(ctx, dlq.Filter{IDs: []int64{1, 3}}, dlq.PurgeOptions{Max: 1})
	if err != nil || !slices.Equal(letterIDs(res.Deleted), []int64{1}) || !slices.Equal(letterIDs(res.Skipped), []int64{3}) || count() != 5 {
		t.Fatalf("by ids: %+v %v (rows %d)", res, err, count())
	}
	res, err = b.store.Purge(ctx, dlq.Filter{Route: "orders"}, dlq.PurgeOptions{})
	if err != nil || !slices.Equal(letterIDs(res.Deleted), []int64{2, 6}) || count() != 3 {
		t.Fatalf("by route: %+v %v (rows %d)", res, err, count())
	}
}

func TestCounts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insert(t, row{id: 1}, row{id: 2}, row{id: 3, status: dlq.StatusReplayed}, row{id: 4, route: "audit"})
	got, err := b.store.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []dlq.RouteCount{{"audit", dlq.StatusNone, 1}, {"orders", dlq.StatusNone, 2}, {"orders", dlq.StatusReplayed, 1}}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestWaitEndedBeforeAnyPoll: a wait whose context ends before the first poll
// completes (a slow first query, an impatient deadline) still names the rows
// it was waiting for.
func TestWaitEndedBeforeAnyPoll(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insert(t, row{id: 1}, row{id: 2})
	ctx := context.Background()
	if _, err := b.store.RequestReplay(ctx, dlq.Filter{}, dlq.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	_, err := b.store.Wait(done, []int64{1, 2}, nil)
	var we *dlq.WaitError
	if !errors.As(err, &we) || !errors.Is(err, context.Canceled) || !slices.Equal(letterIDs(we.Pending), []int64{1, 2}) {
		t.Fatalf("wait: %v", err)
	}
	if we.Pending[0].ReplayStatus != dlq.StatusRequested {
		t.Errorf("pending status %q, want the row's own", we.Pending[0].ReplayStatus)
	}
}
