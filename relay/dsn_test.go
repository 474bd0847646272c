package relay

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestDatabaseURLErrorsHidePassword: the relay puts pgx's parse errors in
// its own (database.url: ...) as they are, relying on pgx to mask the
// password. Every parser the relay uses on database.url must do so, for
// URLs and keyword/value strings, well-formed or not.
func TestDatabaseURLErrorsHidePassword(t *testing.T) {
	t.Parallel()
	const pw = "hunter2"
	dsns := []string{
		"postgres://u:hunter2%zz@h/db",
		"postgres://u:hunter2@h:99999999/db",
		"postgres://u:hunter2@h:port/db",
		"postgres://u:hunter2@[h/db",
		"postgres://u:hunter2@h%zz/db",
		"postgres://u:hunter2@h,h2:x/db",
		"postgres://u:hunter2@h/db?sslmode=bogus",
		"postgres://u:hunter2@h/db?connect_timeout=x",
		"postgres://u:hunter2@h/db?pool_max_conns=x",
		"postgres://u:hunter2@h/db?pool_max_conn_lifetime=x",
		"postgres://u:hunter2@h/db?statement_cache_capacity=x",
		"postgres://u:hunter2@h/db?default_query_exec_mode=x",
		"postgres://u:hunter2@h/db?target_session_attrs=x",
		"postgres://u:hunter2@h/db?sslrootcert=/nonexistent&sslmode=verify-full",
		"postgresql://u:hunter2@h/db?%zz=1",
		"postgres://u:hun/ter2@h/db",                       // unencoded '/' in the password
		"postgres://u:hun?ter2@h/db?sslmode=bogus",         // unencoded '?'
		"postgres://u:hun:ter2@h/db?sslmode=bogus",         // unencoded ':'
		"postgres://u:hunter2@@h/db?sslmode=bogus",         // stray '@'
		"postgres://u@h/db?password=hunter2&sslmode=bogus", // in the query
		"postgres://u@h/db?sslpassword=hunter2&sslmode=bogus",
		"postgres://u:hunter2@h/db\x00",
		"host=h user=u password=hunter2 sslmode=bogus",
		"host=h user=u password='hunter2' sslmode=bogus",
		"host=h user=u password='hun ter2' port=x",
		"host=h user=u password=hunter2 port=x",
		"host=h user=u password=hunter2 pool_max_conns=x",
		"host=h user=u password=hunter2 'unterminated",
		"host=h user=u password=hunter2 =x",
	}
	parsers := map[string]func(string) error{
		"pgconn.ParseConfig": func(s string) error { _, err := pgconn.ParseConfig(s); return err },
		"pgx.ParseConfig":    func(s string) error { _, err := pgx.ParseConfig(s); return err },
		"pgxpool.ParseConfig": func(s string) error {
			_, err := pgxpool.ParseConfig(s)
			return err
		},
		"checkDatabaseURL": checkDatabaseURL,
	}
	for _, dsn := range dsns {
		failed := false
		for name, parse := range parsers {
			err := parse(dsn)
			if err == nil {
				continue
			}
			failed = true
			if msg := err.Error(); strings.Contains(msg, pw) || strings.Contains(msg, "ter2") {
				t.Errorf("%s(%q): the error shows the password: %v", name, dsn, err)
			}
		}
		if !failed {
			t.Errorf("%q: no parser refused it; the case tests nothing", dsn)
		}
	}
}
