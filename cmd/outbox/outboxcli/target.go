package outboxcli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// target says which outbox an operator command works on: either the relay's
// config file (--config), or --database-url, --schema and --slot.
type target struct {
	config   string
	url      string
	schema   string
	slot     string
	withSlot bool
}

func (t *target) add(c *cobra.Command, withSlot bool) {
	t.withSlot = withSlot
	what := "database and schema"
	if withSlot {
		what = "database, schema and slot"
	}
	c.Flags().StringVar(&t.config, "config", "", "take the "+what+" from the relay's config file")
	c.Flags().StringVar(&t.url, "database-url", "", "PostgreSQL connection string (default $DATABASE_URL, then the PG* variables when PGHOST, PGDATABASE, ... is set)")
	c.Flags().StringVar(&t.schema, "schema", "outbox", "schema that holds the outbox tables")
	if withSlot {
		c.Flags().StringVar(&t.slot, "slot", "outbox_relay", "the relay's replication slot")
	}
}

// resolved is the outbox a command works on.
type resolved struct {
	url, schema, slot string
}

// resolve reads the config file, or checks the flags.
func (t *target) resolve(c *cobra.Command) (resolved, error) {
	if t.config != "" {
		for _, f := range []string{"database-url", "schema", "slot"} {
			if fl := c.Flags().Lookup(f); fl != nil && fl.Changed {
				return resolved{}, usageErr("pass either --config, or --database-url with --schema and --slot",
					"--config and --%s conflict: the config file names the database, schema and slot", f)
			}
		}
		cfg, err := loadConfig(t.config)
		if err != nil {
			return resolved{}, err
		}
		return resolved{url: cfg.Database.URL, schema: cfg.Database.Schema, slot: cfg.Database.Slot}, nil
	}
	if err := outboxschema.ValidateName("--schema", t.schema); err != nil {
		return resolved{}, usageErr("", "%v", err)
	}
	if t.withSlot {
		if err := outboxschema.ValidateName("--slot", t.slot); err != nil {
			return resolved{}, usageErr("", "%v", err)
		}
	}
	url, err := databaseURL(t.url)
	if err != nil {
		return resolved{}, err
	}
	return resolved{url: url, schema: t.schema, slot: t.slot}, nil
}

// openPool connects to PostgreSQL through a small pgx pool, checks the
// connection and that the schema holds the given tables. appName shows in
// pg_stat_activity unless the URL sets application_name.
func openPool(ctx context.Context, r resolved, appName string, tables ...string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(r.url)
	if err != nil {
		return nil, usageErr("pass --database-url postgres://USER:PASSWORD@HOST:5432/DB (or set DATABASE_URL, or use --config)", "bad database URL: %v", err)
	}
	cfg.MaxConns = 4
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = appName
	}
	host, port := cfg.ConnConfig.Host, cfg.ConnConfig.Port
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, runtimeErr(fmt.Errorf("connect to PostgreSQL at %s:%d: %w", host, port, err), "check --database-url / DATABASE_URL and that PostgreSQL is running")
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, runtimeErr(fmt.Errorf("connect to PostgreSQL at %s:%d: %w", host, port, err), "check --database-url / DATABASE_URL and that PostgreSQL is running")
	}
	for _, tbl := range tables {
		var ok bool
		if err := pool.QueryRow(pctx, `SELECT to_regclass($1) IS NOT NULL`, outboxschema.Quote(r.schema)+"."+tbl).Scan(&ok); err != nil {
			pool.Close()
			return nil, runtimeErr(fmt.Errorf("check the outbox schema: %w", err), "")
		}
		if !ok {
			pool.Close()
			return nil, runtimeErr(fmt.Errorf("schema %q has no %s table", r.schema, tbl),
				fmt.Sprintf("pass the schema the relay uses (--schema or --config), or create it with `outbox migrate up --schema %s`", r.schema))
		}
	}
	return pool, nil
}

// nowFunc, when set (by tests), replaces the clock of the operator commands.
var nowFunc func() time.Time

// clientNow is the local time, or the tests' fixed one.
func clientNow() time.Time {
	if nowFunc != nil {
		return nowFunc()
	}
	return time.Now()
}

// serverNow is PostgreSQL's clock, or the tests' fixed one: ages and cutoffs
// compare with times the server wrote.
func serverNow(ctx context.Context, pool *pgxpool.Pool) (time.Time, error) {
	if nowFunc != nil {
		return nowFunc(), nil
	}
	var now time.Time
	err := pool.QueryRow(ctx, "SELECT now()").Scan(&now)
	return now, err
}

var (
	dayUnits = regexp.MustCompile(`^(\d+)([dw])`)
	// goUnits is the syntax time.ParseDuration accepts, without a sign: a
	// string that has it and still fails to parse is too long.
	goUnits = regexp.MustCompile(`^((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$`)
)

// errBadDuration is a duration parseDuration cannot read.
var errBadDuration = errors.New("bad duration")

// maxDurationText is the longest duration parseDuration accepts, in days:
// time.Duration counts nanoseconds in an int64, about 292 years.
const maxDurationText = "106751d (about 292 years)"

// parseDuration parses a Go duration ("168h", "90m", "1h30m") that may start
// with days or weeks ("7d", "2w", "1d12h"). A duration longer than
// time.Duration holds is an error (it would wrap around into a short or
// negative one), as is a sign anywhere.
func parseDuration(flag, s string) (time.Duration, error) {
	bad := func() error {
		return usageErr("write durations like 90s, 30m, 168h, 7d or 1d12h", "%s: %w %q", flag, errBadDuration, s)
	}
	tooLong := func() error {
		return usageErr("write a shorter duration, or a date for a point in time", "%s: duration %q is too long: the most is %s", flag, s, maxDurationText)
	}
	rest := strings.TrimSpace(s)
	if rest == "" {
		return 0, bad()
	}
	if strings.Contains(rest, "-") {
		return 0, usageErr("", "%s: duration %q must not be negative", flag, s)
	}
	if strings.Contains(rest, "+") {
		return 0, bad()
	}
	var d time.Duration
	add := func(x time.Duration) bool {
		if x > math.MaxInt64-d {
			return false
		}
		d += x
		return true
	}
	for {
		m := dayUnits.FindStringSubmatch(rest)
		if m == nil {
			break
		}
		unit := 24 * time.Hour
		if m[2] == "w" {
			unit *= 7
		}
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > int64(math.MaxInt64/unit) || !add(time.Duration(n)*unit) {
			return 0, tooLong() // the digits are digits: only their size can fail
		}
		rest = rest[len(m[0]):]
	}
	if rest != "" {
		more, err := time.ParseDuration(rest)
		if err != nil {
			if goUnits.MatchString(rest) {
				return 0, tooLong()
			}
			return 0, bad()
		}
		if !add(more) {
			return 0, tooLong()
		}
	}
	return d, nil
}

// parseTime reads a point in time: RFC 3339 ("2026-03-01T12:00:00Z"), a
// date ("2026-03-01", midnight UTC), or a duration before now ("2h", "7d").
func parseTime(flag, s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05", s); err == nil {
		return t, nil // UTC
	}
	d, err := parseDuration(flag, s)
	if err != nil && !errors.Is(err, errBadDuration) {
		return time.Time{}, err // readable, but too long or negative
	}
	if err != nil {
		return time.Time{}, usageErr("write a time like 2026-03-01T12:00:00Z or 2026-03-01 (UTC), or an age like 2h or 7d", "%s: bad time %q", flag, s)
	}
	return now.Add(-d), nil
}

// dbError is a runtime error from PostgreSQL, with a hint for the causes an
// operator can fix.
func dbError(err error, hint string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42501" { // insufficient_privilege
		hint = "the database role lacks a privilege: see \"Database roles and grants\" in docs/operations.md"
	}
	return runtimeErr(err, hint)
}
