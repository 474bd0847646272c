package relay

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var testSinkTypes = []string{"kafka", "nats", "rabbitmq", "redis", "stdout"}

func TestExampleConfig(t *testing.T) {
	cfg, err := LoadConfig("../testdata/relay.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(testSinkTypes); err != nil {
		t.Fatal(err)
	}
	if cfg.Routes[0].Retry.MaxAttempts != 8 || cfg.Routes[0].Retry.MaxInterval.D() != 30*time.Second {
		t.Errorf("retry: %+v", cfg.Routes[0].Retry)
	}
	if cfg.Routes[1].Retry.MaxAttempts != 10 {
		t.Errorf("default max_attempts = %d, want 10", cfg.Routes[1].Retry.MaxAttempts)
	}
	if cfg.Routes[0].Line != 27 || cfg.Sinks[1].Line != 24 {
		t.Errorf("lines: route %d sink %d", cfg.Routes[0].Line, cfg.Sinks[1].Line)
	}
	if !strings.HasPrefix(cfg.Database.URL, "postgres://") {
		t.Errorf("env default not expanded: %q", cfg.Database.URL)
	}
}

func TestReadLinger(t *testing.T) {
	base := "database: {url: 'postgres://h/db'}\ndefault_route: {drop: true}\n"
	for src, want := range map[string]time.Duration{
		base:                                    time.Millisecond,
		base + "delivery: {read_linger: 3ms}\n": 3 * time.Millisecond,
		base + "delivery: {read_linger: off}\n": 0,
		base + "delivery: {read_linger: 0s}\n":  0,
	} {
		cfg, err := ParseConfig([]byte(src), "t.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Delivery.ReadLinger.D(); got != want {
			t.Errorf("%q: read_linger %s, want %s", src, got, want)
		}
	}
	if _, err := ParseConfig([]byte(base+"delivery: {read_linger: soon}\n"), "t.yaml"); err == nil || !strings.Contains(err.Error(), "or off") {
		t.Errorf("bad read_linger: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	base := "database: {url: 'postgres://h/db'}\nsinks:\n  - {name: bus, type: nats}\nroutes:\n"
	cases := map[string]struct{ src, want string }{
		"duplicate route": {base + "  - {name: a, match: x, sink: bus, destination: d}\n  - {name: a, match: y, sink: bus, destination: d}\n",
			`t.yaml:6: routes[1]: duplicate route name "a" (first used on line 5)`},
		"bad CEL":        {base + "  - {name: a, match: x, sink: bus, destination: d, filter: 'payload.total >'}\n", `t.yaml:5: routes[0].filter: bad CEL filter`},
		"CEL not bool":   {base + "  - {name: a, match: x, sink: bus, destination: d, filter: '1 + 2'}\n", `want bool`},
		"no routes":      {"database: {url: 'postgres://h/db'}\n", "no routes and no default_route"},
		"drop with sink": {base + "default_route: {drop: true, sink: bus}\n", "drop: true cannot be combined"},
		"bad schema":     {"database: {url: 'postgres://h/db', schema: Bad-Name}\ndefault_route: {drop: true}\n", `database.schema "Bad-Name" may only contain`},
		"on_delivered":   {"database: {url: 'postgres://h/db'}\ndelivery: {on_delivered: keep}\ndefault_route: {drop: true}\n", "must be mark or delete"},
		"read_linger":    {"database: {url: 'postgres://h/db'}\ndelivery: {read_linger: 1s}\ndefault_route: {drop: true}\n", "delivery.read_linger: must be at most 100ms"},
		"no url":         {"database: {schema: x}\ndefault_route: {drop: true}\n", "database.url: required"},
		"route named default": {base + "  - {name: a, match: x, sink: bus, destination: d}\n  - {name: default, match: y, sink: bus, destination: d}\n",
			`t.yaml:6: routes[1]: the route name "default" is reserved for default_route`},
		"listen not an address": {"database: {url: 'postgres://h/db'}\nadmin: {listen: not an address}\ndefault_route: {drop: true}\n", `admin.listen: "not an address" is not an address to listen on: missing port in address`},
		"listen port range":     {"database: {url: 'postgres://h/db'}\nadmin: {listen: ':99999'}\ndefault_route: {drop: true}\n", `admin.listen: ":99999" is not an address to listen on: invalid port`},
		"url does not parse":    {"database: {url: 'postgres://u:pw@h:notaport/db'}\ndefault_route: {drop: true}\n", "database.url: cannot parse `postgres://u:xxxxx@h:notaport/db`: invalid port"},
		"url keyword/value":     {"database: {url: 'host=h sslmode=sometimes'}\ndefault_route: {drop: true}\n", "database.url: cannot parse `host=h sslmode=sometimes`: failed to configure TLS"},
		"retry order":           {base + "  - {name: a, match: x, sink: bus, destination: d, retry: {initial_interval: 1m, max_interval: 1s}}\n", "shorter than initial_interval"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.src), "t.yaml")
			if err == nil {
				err = cfg.Validate(testSinkTypes)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v is not ErrConfig", err)
			}
		})
	}
}

// TestListenAddresses: what admin.listen accepts is what net.Listen takes.
func TestListenAddresses(t *testing.T) {
	for _, ok := range []string{"off", "127.0.0.1:9187", ":9187", "[::1]:0", "localhost:65535", "0.0.0.0:http"} {
		if err := checkListen(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "9187", "127.0.0.1:65536", "127.0.0.1:-1", "h:p:q", "[::1:9187"} {
		if err := checkListen(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("database: {url: 'postgres://h/db'}\ndefault_route: {drop: true}\n"))
	f.Add([]byte("sinks:\n  - {name: a, type: nats}\nroutes:\n  - {name: r, match: 'a.*', sink: a, destination: '{{.EventType}}'}\n"))
	f.Add([]byte("database:\n  url: ${X:-y}\n  slot: [1,2]\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := ParseConfig(src, "f.yaml")
		if err != nil {
			return
		}
		if err := cfg.Validate(testSinkTypes); err != nil {
			return
		}
		if _, err := newRouter(cfg); err != nil {
			t.Fatalf("valid config but NewRouter failed: %v", err)
		}
	})
}

// TestEnvExpansion: an unset variable and a variable set to "" are errors
// that say which, naming the line; ${NAME:-default} covers both.
func TestEnvExpansion(t *testing.T) {
	t.Setenv("OUTBOX_TEST_EMPTY_VAR", "")
	t.Setenv("OUTBOX_TEST_SET_VAR", "postgres://x")
	for src, want := range map[string]string{
		"database:\n  url: ${OUTBOX_TEST_EMPTY_VAR}\n":                  "t.yaml:2: environment variable OUTBOX_TEST_EMPTY_VAR is set but empty",
		"database:\n  url: ${OUTBOX_TEST_SURELY_UNSET_VAR}\n":           "t.yaml:2: environment variable OUTBOX_TEST_SURELY_UNSET_VAR is not set",
		"database:\n  url: ${OUTBOX_TEST_EMPTY_VAR:-fallback}\n":        "",
		"database:\n  url: ${OUTBOX_TEST_SURELY_UNSET_VAR:-fallback}\n": "",
		"database:\n  url: ${OUTBOX_TEST_SET_VAR}\n":                    "",
	} {
		cfg, err := ParseConfig([]byte(src+"default_route: {drop: true}\n"), "t.yaml")
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", src, err)
		case want == "" && cfg.Database.URL != "fallback" && cfg.Database.URL != "postgres://x":
			t.Errorf("%q: url %q", src, cfg.Database.URL)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: error %v, want %q", src, err, want)
		}
	}
}
