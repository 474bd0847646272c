package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outbox/internal/testutil"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const goodTail = `
sinks:
  - name: bus
    type: nats
    stream: EVENTS
routes:
  - name: orders
    match: "order.*"
    sink: bus
    destination: "orders.{{.EventType}}"
`

func TestBadConfigExitsTwoNamingTheLine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body string
		want       []string
	}{
		{"malformed yaml", "database:\n  url: x\nsinks: [\n", []string{"relay.yaml:3", "did not find expected node content"}},
		{"unknown key", "database:\n  url: postgres://h/db\n  slto: s\n" + goodTail, []string{"relay.yaml:3", `unknown key "slto"`, `did you mean "slot"`}},
		{"unknown sink in route", "database:\n  url: postgres://h/db\n" + strings.Replace(goodTail, "sink: bus", "sink: bsu", 1),
			[]string{"relay.yaml:9", `unknown sink "bsu"`, `did you mean "bus"`}},
		{"bad glob", "database:\n  url: postgres://h/db\n" + strings.Replace(goodTail, `"order.*"`, `"order.[*"`, 1),
			[]string{"relay.yaml:9", "bad glob", "order.[*"}},
		{"bad template", "database:\n  url: postgres://h/db\n" + strings.Replace(goodTail, "{{.EventType}}", "{{.EvenType}}", 1),
			[]string{"relay.yaml:9", "unknown field .EvenType", "did you mean .EventType"}},
		{"unknown sink type", "database:\n  url: postgres://h/db\n" + strings.Replace(goodTail, "type: nats", "type: natz", 1),
			[]string{"relay.yaml:5", `unknown sink type "natz"`, `did you mean "nats"`}},
		{"missing env", "database:\n  url: ${OUTBOX_E2E_SURELY_UNSET}\n" + goodTail, []string{"relay.yaml:2", "OUTBOX_E2E_SURELY_UNSET is not set"}},
		{"bad CEL filter", "database:\n  url: postgres://h/db\n" + strings.Replace(goodTail, `    sink: bus`, "    filter: 'payload.total >'\n    sink: bus", 1),
			[]string{"relay.yaml:9", "routes[0].filter: bad CEL filter"}},
		{"duplicate route", "database:\n  url: postgres://h/db\n" + goodTail + "  - name: orders\n    match: x\n    sink: bus\n    destination: y\n",
			[]string{"relay.yaml:13", `duplicate route name "orders" (first used on line 9)`}},
		{"bad duration", "database:\n  url: postgres://h/db\n" + goodTail + "    retry: {initial_interval: soon}\n", []string{"relay.yaml:13", `bad duration "soon"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, tc.body)
			for _, args := range [][]string{{"relay", "--config", path}, {"config", "check", "--config", path}} {
				res := run(t, nil, args...)
				if res.code != 2 {
					t.Fatalf("%v: exit %d, want 2\nstderr: %s", args, res.code, res.stderr)
				}
				for _, w := range tc.want {
					if !strings.Contains(res.stderr, w) {
						t.Errorf("%v: stderr lacks %q:\n%s", args, w, res.stderr)
					}
				}
			}
		})
	}
}

func TestMissingConfigAndBadFlags(t *testing.T) {
	t.Parallel()
	res := run(t, nil, "relay", "--config", filepath.Join(t.TempDir(), "nope.yaml"))
	if res.code != 2 || !strings.Contains(res.stderr, "config file not found") {
		t.Errorf("missing config: exit %d, stderr %s", res.code, res.stderr)
	}
	res = run(t, nil, "relay", "--confg", "x")
	if res.code != 2 || !strings.Contains(res.stderr, "unknown flag") {
		t.Errorf("bad flag: exit %d, stderr %s", res.code, res.stderr)
	}
	res = run(t, nil, "migrate", "down", "--all", "--to", "1", "--database-url", "postgres://127.0.0.1:1/x")
	if res.code != 2 || !strings.Contains(res.stderr, "conflict") {
		t.Errorf("conflicting flags: exit %d, stderr %s", res.code, res.stderr)
	}
	res = run(t, nil, "migrate", "up", "--database-url", "postgres://u:s3cret@127.0.0.1:1/x?connect_timeout=2")
	if res.code != 1 || strings.Contains(res.stderr, "s3cret") || !strings.Contains(res.stderr, "hint:") {
		t.Errorf("unreachable database: exit %d (want 1), stderr %s", res.code, res.stderr)
	}
}

func TestRelayNotMigrated(t *testing.T) {
	t.Parallel()
	dsn := testutil.DatabaseURL(t)
	path := writeFile(t, "database:\n  url: "+dsn+"\n  schema: never_migrated_x\nadmin: {listen: \"off\"}\nsinks:\n  - name: out\n    type: stdout\nroutes:\n  - name: all\n    match: \"*\"\n    sink: out\n    destination: x\n")
	res := run(t, nil, "relay", "--config", path)
	if res.code != 1 || !strings.Contains(res.stderr, "outbox migrate up") {
		t.Fatalf("exit %d, want 1 with a hint to run outbox migrate up; stderr:\n%s", res.code, res.stderr)
	}
}

// TestRelayWALLevelNotLogical uses the machine's own PostgreSQL (wal_level
// replica by default), or OUTBOX_TEST_REPLICA_DATABASE_URL.
func TestRelayWALLevelNotLogical(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("OUTBOX_TEST_REPLICA_DATABASE_URL")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&connect_timeout=3"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Skipf("no PostgreSQL with wal_level other than logical at %s (%v): set OUTBOX_TEST_REPLICA_DATABASE_URL", dsn, err)
	}
	var level string
	conn.QueryRow(ctx, "SHOW wal_level").Scan(&level)
	conn.Close(ctx)
	if level == "logical" {
		t.Skipf("the PostgreSQL at %s has wal_level=logical; set OUTBOX_TEST_REPLICA_DATABASE_URL to one without", dsn)
	}
	path := writeFile(t, "database:\n  url: "+dsn+"\nadmin: {listen: \"off\"}\nsinks:\n  - name: out\n    type: stdout\nroutes:\n  - name: all\n    match: \"*\"\n    sink: out\n    destination: x\n")
	res := run(t, nil, "relay", "--config", path)
	if res.code != 1 || !strings.Contains(res.stderr, "wal_level = logical") || !strings.Contains(res.stderr, "restart PostgreSQL") {
		t.Fatalf("exit %d, want 1 with how to set wal_level; stderr:\n%s", res.code, res.stderr)
	}
}
