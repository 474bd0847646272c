package outboxcli

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outboxrelay/outbox/internal/testutil"
)

// TestReadCommandsOnlyRead runs every command that shows state as a role
// with only USAGE and SELECT, in sessions where every transaction is
// read-only: any write (CREATE SCHEMA IF NOT EXISTS, goose creating its
// version table) fails them.
func TestReadCommandsOnlyRead(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	s := f.o.Schema
	role := "ro_" + strings.TrimPrefix(s, "t_")
	for _, q := range []string{
		"CREATE ROLE " + role + " LOGIN",
		"ALTER ROLE " + role + " SET default_transaction_read_only = on",
		"GRANT USAGE ON SCHEMA " + s + " TO " + role,
		"GRANT SELECT ON ALL TABLES IN SCHEMA " + s + " TO " + role,
	} {
		if _, err := f.o.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		f.o.Pool.Exec(context.Background(), "DROP OWNED BY "+role)
		f.o.Pool.Exec(context.Background(), "DROP ROLE "+role)
	})
	u, err := url.Parse(f.o.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	roURL := u.String()

	cfgPath := filepath.Join(t.TempDir(), "relay.yaml")
	cfg := "database:\n  url: " + roURL + "\n  schema: " + s + "\n  slot: " + f.o.Slot + "\n  publication: " + f.o.Publication + `
sinks:
  - name: console
    type: stdout
routes:
  - name: all
    match: "*"
    sink: console
    destination: "x"
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) result {
		var out, errb bytes.Buffer
		code := Main(args, strings.NewReader(""), &out, &errb)
		return result{code: code, stdout: f.normalize(out.String()), stderr: f.normalize(errb.String())}
	}
	for _, args := range [][]string{
		{"migrate", "status", "--schema", s},
		{"migrate", "status", "--schema", s, "--json"},
		{"status", "--schema", s, "--slot", f.o.Slot},
		{"dlq", "list", "--schema", s},
		{"dlq", "show", "1", "--schema", s},
		{"events", "--schema", s, "--aggregate", "order:o-10"},
		{"prune", "--schema", s, "--older-than", "1h", "--dry-run"},
		{"dlq", "purge", "--schema", s, "--all", "--dry-run"},
		{"dlq", "replay", "--schema", s, "--all", "--dry-run"},
	} {
		res := run(append(args, "--database-url", roURL)...)
		if res.code != 0 {
			t.Errorf("outbox %s as a read-only role: exit %d\n%s", strings.Join(args, " "), res.code, res.stderr)
		}
	}
	if res := run("config", "check", "--config", cfgPath, "--connect"); res.code != 0 {
		t.Errorf("config check --connect as a read-only role: exit %d\n%s", res.code, res.stderr)
	}

	// A database never migrated: status says so, lists what is pending,
	// and creates nothing.
	fresh := testutil.RandomName("fresh_")
	res := run("migrate", "status", "--schema", fresh, "--database-url", roURL)
	if res.code != 0 {
		t.Fatalf("migrate status of a schema never migrated: exit %d\n%s", res.code, res.stderr)
	}
	if !strings.Contains(res.stdout, "not migrated") || !strings.Contains(res.stdout, "00001_outbox.sql") || !strings.Contains(res.stdout, "outbox migrate up") {
		t.Errorf("migrate status of a schema never migrated says:\n%s", res.stdout)
	}
	var exists bool
	if err := f.o.Pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", fresh).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		f.o.Pool.Exec(ctx, "DROP SCHEMA "+fresh+" CASCADE")
		t.Errorf("migrate status created schema %s", fresh)
	}
	// The same as the superuser, whose writes would succeed.
	res = run("migrate", "status", "--schema", fresh, "--database-url", f.o.DatabaseURL)
	if res.code != 0 || !strings.Contains(res.stdout, "not migrated") {
		t.Errorf("migrate status (superuser) of a schema never migrated: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if err := f.o.Pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", fresh).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		f.o.Pool.Exec(ctx, "DROP SCHEMA "+fresh+" CASCADE")
		t.Errorf("migrate status created schema %s", fresh)
	}
}

// TestDatabaseURLRequired: no --database-url, no DATABASE_URL and no PG*
// variable is an error naming them (exit 2), as is an explicitly empty one;
// never a silent connection to whatever libpq picks. The PG* variables
// count as asking for libpq's defaults. Not parallel: it sets variables.
func TestDatabaseURLRequired(t *testing.T) {
	dsn := testutil.DatabaseURL(t)
	for _, v := range []string{"DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE", "PGPASSWORD", "PGSSLMODE"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	run := func(args ...string) result {
		var out, errb bytes.Buffer
		code := Main(args, strings.NewReader(""), &out, &errb)
		return result{code: code, stdout: out.String(), stderr: errb.String()}
	}
	reading := [][]string{
		{"migrate", "status"},
		{"status"},
		{"dlq", "list"},
		{"dlq", "show", "1"},
		{"events", "--aggregate", "order:1"},
		{"prune", "--older-than", "1h", "--dry-run"},
	}
	// Commands that write run only once the reading ones were refused: on a
	// build that connects anyway they would migrate whatever database libpq
	// picked.
	writing := [][]string{
		{"migrate", "up"},
		{"migrate", "inbox", "up"},
	}
	expectUsage := func(what string, extra ...string) {
		t.Helper()
		refused := true
		check := func(args []string) {
			res := run(append(args, extra...)...)
			if res.code != ExitUsage || !strings.Contains(res.stderr, "--database-url") || !strings.Contains(res.stderr, "DATABASE_URL") {
				refused = false
				t.Errorf("%s: outbox %s: exit %d, want %d naming --database-url and DATABASE_URL\n%s",
					what, strings.Join(args, " "), res.code, ExitUsage, res.stderr)
			}
		}
		for _, args := range reading {
			check(args)
		}
		if !refused {
			t.Errorf("%s: not running %v: the reading commands connected", what, writing)
			return
		}
		for _, args := range writing {
			check(args)
		}
	}
	expectUsage("nothing set")
	expectUsage("--database-url \"\"", "--database-url", "")
	expectUsage("--database-url \" \"", "--database-url", " ")
	t.Setenv("DATABASE_URL", "")
	expectUsage("DATABASE_URL set but empty")
	t.Setenv("DATABASE_URL", dsn)
	expectUsage("--database-url \"\" with DATABASE_URL set", "--database-url", "")
	os.Unsetenv("DATABASE_URL")

	// The PG* variables: libpq's defaults, as asked. They point at the test
	// database, so the command succeeds there.
	o := testutil.NewOutbox(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGHOST", u.Hostname())
	t.Setenv("PGPORT", u.Port())
	t.Setenv("PGDATABASE", strings.TrimPrefix(u.Path, "/"))
	t.Setenv("PGUSER", u.User.Username())
	if p, ok := u.User.Password(); ok {
		t.Setenv("PGPASSWORD", p)
	}
	t.Setenv("PGSSLMODE", u.Query().Get("sslmode"))
	for _, args := range [][]string{{"dlq", "list", "--schema", o.Schema}, {"migrate", "status", "--schema", o.Schema}} {
		if res := run(args...); res.code != 0 {
			t.Errorf("with PG* set: outbox %s: exit %d\n%s", strings.Join(args, " "), res.code, res.stderr)
		}
	}
	// An explicitly empty flag is still a mistake, PG* or not.
	if res := run("dlq", "list", "--schema", o.Schema, "--database-url", ""); res.code != ExitUsage {
		t.Errorf("--database-url \"\" with PG* set: exit %d, want %d\n%s", res.code, ExitUsage, res.stderr)
	}
}
