package e2e

import (
	"strings"
	"testing"
)

// TestConfigCheckRefusesWhatRelayRefuses: every config the relay refuses
// before it connects, `outbox config check` refuses too, both with exit 2 and
// the same message naming the field. (Before, these passed config check and
// made the relay exit 1, some of them after connecting to the brokers.)
func TestConfigCheckRefusesWhatRelayRefuses(t *testing.T) {
	t.Parallel()
	const db = "database:\n  url: postgres://u:s3cret@127.0.0.1:1/x?connect_timeout=1\n"
	const stdoutTail = "sinks:\n  - {name: out, type: stdout}\nroutes:\n  - {name: all, match: '*', sink: out, destination: x}\n"
	// Nothing listens on port 1: a relay that got as far as connecting
	// would fail at run time (exit 1), not with exit 2.
	natsTail := func(keys string) string {
		return "admin: {listen: 'off'}\nsinks:\n  - {name: bus, type: nats, url: 'nats://127.0.0.1:1', " + keys +
			"}\nroutes:\n  - {name: all, match: '*', sink: bus, destination: 'orders.{{.EventType}}'}\n"
	}
	cases := []struct {
		name, body string
		env        []string
		want       []string
	}{
		{"admin.listen not an address", db + "admin: {listen: 'not an address'}\n" + stdoutTail,
			nil, []string{"admin.listen", `"not an address"`}},
		{"admin.listen port out of range", db + "admin: {listen: ':99999'}\n" + stdoutTail,
			nil, []string{"admin.listen", "99999"}},
		{"database.url does not parse", "database:\n  url: 'postgres://u:s3cret@127.0.0.1:notaport/x'\nadmin: {listen: 'off'}\n" + stdoutTail,
			nil, []string{"database.url", "invalid port"}},
		{"database.url bad sslmode", "database:\n  url: 'postgres://u:s3cret@127.0.0.1/x?sslmode=bogus'\nadmin: {listen: 'off'}\n" + stdoutTail,
			nil, []string{"database.url", "sslmode is invalid"}},
		{"nats stream name", db + natsTail("stream: 'ORDERS.V1'"), nil, []string{"relay.yaml:5", "sinks.bus", "stream", `"ORDERS.V1"`}},
		{"nats stream name with a space", db + natsTail("stream: 'MY STREAM'"), nil, []string{"relay.yaml:5", "sinks.bus", "stream", `"MY STREAM"`}},
		{"nats storage", db + natsTail("stream: ORDERS, storage: disk"), nil, []string{"relay.yaml:5", "sinks.bus", "storage", `"disk"`}},
		{"route named default", db + "admin: {listen: 'off'}\n" + stdoutTail + "  - {name: default, match: 'x.*', sink: out, destination: y}\ndefault_route: {drop: true}\n",
			nil, []string{"relay.yaml:8", `routes[1]: the route name "default" is reserved for default_route`}},
		{"env var set but empty", "database:\n  url: ${OUTBOX_E2E_EMPTY_URL}\n" + stdoutTail,
			[]string{"OUTBOX_E2E_EMPTY_URL="}, []string{"relay.yaml:2", "OUTBOX_E2E_EMPTY_URL is set but empty"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, tc.body)
			check := run(t, tc.env, "config", "check", "--config", path)
			rel := run(t, tc.env, "relay", "--config", path)
			for _, r := range []struct {
				cmd string
				res result
			}{{"config check", check}, {"relay", rel}} {
				if r.res.code != 2 {
					t.Errorf("%s: exit %d, want 2\nstderr: %s", r.cmd, r.res.code, r.res.stderr)
				}
				for _, w := range tc.want {
					if !strings.Contains(r.res.stderr, w) {
						t.Errorf("%s: stderr lacks %q:\n%s", r.cmd, w, r.res.stderr)
					}
				}
				if strings.Contains(r.res.stderr, "s3cret") {
					t.Errorf("%s: the password is in the message:\n%s", r.cmd, r.res.stderr)
				}
			}
			if check.stderr != rel.stderr {
				t.Errorf("config check and relay say different things:\nconfig check: %s\nrelay: %s", check.stderr, rel.stderr)
			}
		})
	}
}
