package e2e

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/sdk"
)

// TestLeastPrivilege runs the application and the relay with exactly the
// grants of docs/security.md.
func TestLeastPrivilege(t *testing.T) {
	t.Parallel()
	o := testutil.NewOutbox(t)
	ctx := context.Background()
	suffix := strings.TrimPrefix(o.Schema, "t_")
	app, rel, op := "app_"+suffix, "relay_"+suffix, "op_"+suffix
	s := o.Schema
	for _, q := range []string{
		"CREATE ROLE " + app + " LOGIN",
		"GRANT USAGE ON SCHEMA " + s + " TO " + app,
		"GRANT INSERT ON " + s + ".events TO " + app,
		"CREATE ROLE " + rel + " LOGIN REPLICATION",
		"GRANT USAGE ON SCHEMA " + s + " TO " + rel,
		"GRANT SELECT, UPDATE, DELETE ON " + s + ".events TO " + rel,
		"GRANT SELECT, INSERT, UPDATE ON " + s + ".dead_letters TO " + rel,
		"GRANT SELECT, INSERT, UPDATE ON " + s + ".relay_state TO " + rel,
		"CREATE ROLE " + op + " LOGIN",
		"GRANT USAGE ON SCHEMA " + s + " TO " + op,
		"GRANT SELECT, DELETE ON " + s + ".events TO " + op,
		"GRANT SELECT, UPDATE, DELETE ON " + s + ".dead_letters TO " + op,
		"GRANT SELECT ON " + s + ".relay_state TO " + op,
		"GRANT SELECT ON " + s + ".schema_migrations TO " + op,
	} {
		if _, err := o.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		// The relay's slot must go before its role.
		testutil.DropSlot(t, o.Pool, o.Slot)
		for _, r := range []string{app, rel, op} {
			o.Pool.Exec(context.Background(), "DROP OWNED BY "+r)
			o.Pool.Exec(context.Background(), "DROP ROLE "+r)
		}
	})
	as := func(role string) string {
		u, err := url.Parse(o.DatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User(role)
		return u.String()
	}

	// The relay, as its role.
	relayOutbox := *o
	relayOutbox.DatabaseURL = as(rel)
	cfg, stream, _ := natsConfig(t, &relayOutbox, `  - name: poison
    match: "poison.*"
    sink: bus
    destination: "{{.TenantID}}"
`)
	// An event without a tenant renders an empty destination: dead-lettered.
	relay := startRelay(t, cfg)
	relay.waitLog("streaming started", 30*time.Second)

	// The application, as its role, through the SDK.
	appPool, err := pgxpool.New(ctx, as(app))
	if err != nil {
		t.Fatal(err)
	}
	defer appPool.Close()
	w, _ := sdk.New(&sdk.Config{Schema: s})
	for i := range 20 {
		err := pgx.BeginFunc(ctx, appPool, func(tx pgx.Tx) error {
			if err := w.Write(ctx, tx, &sdk.Event{AggregateType: "order", AggregateID: fmt.Sprint(i % 3), EventType: "order.made", Payload: []byte(`{}`)}); err != nil {
				return err
			}
			return w.WriteBatch(ctx, tx, []sdk.Event{{AggregateType: "order", AggregateID: "b", EventType: "order.batched", Payload: []byte(`{}`)}})
		})
		if err != nil {
			t.Fatalf("application write with INSERT only: %v", err)
		}
	}
	if _, err := appPool.Exec(ctx, "INSERT INTO "+s+".events (aggregate_type, aggregate_id, event_type, payload) VALUES ('p', '1', 'poison.x', '\\x7b7d')"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"SELECT count(*) FROM " + s + ".events", "UPDATE " + s + ".events SET delivered_at = now()", "DELETE FROM " + s + ".events"} {
		if _, err := appPool.Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("application role: %q gave %v, want permission denied", q, err)
		}
	}
	got := readStream(t, stream, 40, time.Minute)
	if len(got) != 40 {
		t.Errorf("%d messages, want 40", len(got))
	}
	waitDelivered(t, o, 30*time.Second)
	var dead int
	deadline := time.Now().Add(20 * time.Second)
	for dead == 0 && time.Now().Before(deadline) {
		o.Pool.QueryRow(ctx, "SELECT count(*) FROM "+s+".dead_letters WHERE route = 'poison'").Scan(&dead)
		time.Sleep(100 * time.Millisecond)
	}
	if dead != 1 {
		t.Errorf("%d dead letters written by the relay role, want 1", dead)
	}
	if code := relay.stop(); code != 0 {
		t.Errorf("relay exited %d", code)
	}
	if strings.Contains(relay.out.String(), "permission denied") {
		t.Errorf("the relay hit a permission error:\n%s", tail(relay.out.String(), 20))
	}

	// The operator commands, as the operator role.
	env := []string{"DATABASE_URL=" + as(op)}
	for _, args := range [][]string{
		{"status", "--schema", s, "--slot", o.Slot, "--json"},
		{"dlq", "list", "--schema", s, "--json"},
		{"prune", "--schema", s, "--older-than", "1h", "--dry-run"},
		{"events", "--schema", s, "--aggregate", "order:b", "--json"},
		{"migrate", "status", "--schema", s, "--publication", o.Publication},
		{"dlq", "show", "1", "--schema", s},
	} {
		res := run(t, env, args...)
		if res.code != 0 {
			t.Errorf("operator: outbox %s: exit %d\n%s", strings.Join(args, " "), res.code, res.stderr)
		}
	}
}
