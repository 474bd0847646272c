package e2e

import (
	"strings"
	"testing"
)

// TestTortureOrderCheck checks the torture test's order invariant on
// made-up arrivals: a replay that sent a key's rows out of commit order
// fails it; rows of the replay that also arrived outside it (seen in seed
// 7141636020977376421: a dead-lettered row sent again by the next relay's
// snapshot after a kill lost its mark) do not; a stream inversion does.
func TestTortureOrderCheck(t *testing.T) {
	const at = "2026-12-01 23:28:48+00"
	rows := []*tRow{
		{id: "a", key: "k", seq: 1},
		{id: "b", key: "k", seq: 2},
		{id: "c", key: "k", seq: 3},
	}
	check := func(arrivals []string, dead map[string]string) *tInv {
		c := &tChecks{led: newLedger(), st: &tState{dls: map[string]map[string]*tDL{}}, msgs: map[string][]tMsg{}}
		for _, r := range rows {
			c.led.rows[r.id] = r
		}
		for id, status := range dead {
			c.st.dls[id] = map[string]*tDL{"r": {status: status, requestedAt: at}}
		}
		for _, id := range arrivals {
			c.msgs["r"] = append(c.msgs["r"], tMsg{route: "r", id: id})
		}
		return c.orderPerKey()
	}
	replayed := map[string]string{"a": "replayed", "b": "replayed", "c": "replayed"}
	for _, tc := range []struct {
		name     string
		arrivals []string
		dead     map[string]string
		fail     string
	}{
		{"stream in order", []string{"a", "b", "c"}, nil, ""},
		{"stream inversion", []string{"a", "c", "b"}, nil, "first arrived after"},
		{"replay in order", []string{"a", "b", "c"}, replayed, ""},
		{"replay out of order", []string{"b", "a", "c"}, replayed, "the replay sent them out of commit order"},
		{"replayed row that also arrived before its replay", []string{"b", "a", "b", "c"}, replayed, ""},
		{"replayed row that also arrived after its replay", []string{"a", "b", "c", "a"}, replayed, ""},
		{"replay failed again: no order to keep", []string{"b", "a"}, map[string]string{"a": "failed", "b": "replayed"}, ""},
	} {
		v := check(tc.arrivals, tc.dead)
		switch {
		case tc.fail == "" && v.count > 0:
			t.Errorf("%s: %v, want no violation", tc.name, v.viol)
		case tc.fail != "" && (v.count == 0 || !strings.Contains(v.viol[0], tc.fail)):
			t.Errorf("%s: %v, want a violation saying %q", tc.name, v.viol, tc.fail)
		}
	}
}
