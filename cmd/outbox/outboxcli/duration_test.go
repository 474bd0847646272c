package outboxcli

import (
	"bytes"
	"math"
	"math/big"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestParseDurationOverflow: a duration too long for time.Duration is refused,
// never wrapped around into a short one (30501w once became 3 days).
func TestParseDurationOverflow(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"30501w",                      // 30501 weeks wrap around to about 3 days
		"36500d36500d36500d36500d",    // each part fits, the sum does not
		"106752d",                     // one day more than time.Duration holds
		"106751d24h",                  // the Go part tips it over
		"15251w",                      // weeks: one more than fits
		"9223372036854775808d",        // more days than an int64
		"99999999999999999999999999w", // far more
		"2562048h",                    // time.ParseDuration's own overflow
		"100000d6752d",
	} {
		_, err := parseDuration("--older-than", s)
		if err == nil {
			t.Errorf("parseDuration(%q) accepted", s)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "--older-than") || !strings.Contains(msg, "106751d") {
			t.Errorf("parseDuration(%q): %q does not name the flag and the maximum", s, msg)
		}
	}
	for s, want := range map[string]time.Duration{
		"106751d":   106751 * 24 * time.Hour,
		"15250w":    15250 * 7 * 24 * time.Hour,
		"106751d1h": 106751*24*time.Hour + time.Hour,
		"36500d":    36500 * 24 * time.Hour,
		"1w1d":      8 * 24 * time.Hour,
	} {
		if got, err := parseDuration("--x", s); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	// Signs anywhere are refused: "1d-1h" is not 23 hours.
	for _, s := range []string{"1d-1h", "-1d", "1d+1h", "-0s"} {
		if _, err := parseDuration("--x", s); err == nil {
			t.Errorf("parseDuration(%q) accepted", s)
		}
	}
	// parseTime keeps the reason.
	if _, err := parseTime("--until", "30501w", fixedNow); err == nil || !strings.Contains(err.Error(), "106751d") {
		t.Errorf("parseTime(30501w) = %v, want an error naming the maximum", err)
	}
}

var (
	refDayPart = regexp.MustCompile(`^(\d+)([dw])`)
	refGoPart  = regexp.MustCompile(`^((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$`)
)

// refDuration computes what s means in nanoseconds, without overflow (a
// big.Int), or ok false when s is not a duration the CLI accepts in form.
func refDuration(s string) (*big.Int, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, false
	}
	total := new(big.Int)
	for {
		m := refDayPart.FindStringSubmatch(s)
		if m == nil {
			break
		}
		n, _ := new(big.Int).SetString(m[1], 10)
		unit := int64(24 * time.Hour)
		if m[2] == "w" {
			unit *= 7
		}
		total.Add(total, n.Mul(n, big.NewInt(unit)))
		s = s[len(m[0]):]
	}
	if s == "" {
		return total, true
	}
	if s == "0" {
		return total, true
	}
	if !refGoPart.MatchString(s) {
		return nil, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return big.NewInt(0).Lsh(big.NewInt(1), 64), true // overflows on its own
	}
	return total.Add(total, big.NewInt(int64(d))), true
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"7d", "2w", "1d12h", "30501w", "36500d36500d36500d36500d", "106751d", "106751d23h47m16.854775807s",
		"106751d23h47m16.854775808s", "15250w6d", "9223372036854775807ns", "9223372036854775808ns", "1.5h", "0", "1d-1h", "d", ""} {
		f.Add(s)
	}
	maxD := big.NewInt(math.MaxInt64)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseDuration("--x", s)
		want, ok := refDuration(s)
		switch {
		case err == nil && !ok:
			// Forms the reference does not know (e.g. "+1h") are fine
			// as long as nothing negative comes out.
			if got < 0 {
				t.Fatalf("parseDuration(%q) = %v, negative", s, got)
			}
		case err == nil && (want.Cmp(maxD) > 0 || want.Cmp(big.NewInt(int64(got))) != 0):
			t.Fatalf("parseDuration(%q) = %v (%d ns), want %s ns", s, got, got, want)
		case err != nil && ok && want.Cmp(maxD) <= 0 && !strings.ContainsAny(s, "+-"):
			t.Fatalf("parseDuration(%q) refused a duration that fits (%s ns): %v", s, want, err)
		}
	})
}

// TestRefusedBeforeConnecting: values that make no sense are usage errors
// (exit 2) that name the flag, before any database is touched.
func TestRefusedBeforeConnecting(t *testing.T) {
	t.Parallel()
	const url = "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"prune", "--older-than", "30501w"}, []string{"--older-than", "106751d"}},
		{[]string{"prune", "--older-than", "36500d36500d36500d36500d"}, []string{"--older-than", "106751d"}},
		{[]string{"dlq", "purge", "--until", "30501w", "--yes"}, []string{"--until", "106751d"}},
		{[]string{"dlq", "list", "--since", "36500d36500d36500d36500d"}, []string{"--since", "106751d"}},
		{[]string{"dlq", "replay", "--all", "--wait", "--timeout", "30501w"}, []string{"--timeout", "106751d"}},
		{[]string{"migrate", "down", "--to", "-1"}, []string{"--to", "-1"}},
		{[]string{"relay", "--config", "testdata/none.yaml", "--drain-timeout", "-1s"}, []string{"--drain-timeout"}},
	} {
		var out, errb bytes.Buffer
		args := tc.args
		if args[0] != "relay" {
			args = append(args, "--database-url", url)
		}
		code := Main(args, strings.NewReader(""), &out, &errb)
		if code != ExitUsage {
			t.Errorf("outbox %s: exit %d, want %d\n%s", strings.Join(tc.args, " "), code, ExitUsage, errb.String())
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(errb.String(), w) {
				t.Errorf("outbox %s: stderr lacks %q:\n%s", strings.Join(tc.args, " "), w, errb.String())
			}
		}
	}
}

// TestListUnknownID: `dlq list --id` with an id that does not exist exits 1
// naming it, as docs/cli.md says and as show, replay and purge do.
func TestListUnknownID(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, args := range [][]string{{"dlq", "list", "--id", "999"}, {"dlq", "list", "--id", "1,999", "--json"}} {
		res := f.run(t, args...)
		if res.code != ExitFailure || !strings.Contains(res.stderr, "no dead letter with id 999") || res.stdout != "" {
			t.Errorf("outbox %s: exit %d, want 1 naming id 999 and printing nothing\nstdout: %s\nstderr: %s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
		}
	}
	if res := f.run(t, "dlq", "list", "--id", "1"); res.code != 0 {
		t.Errorf("dlq list --id 1: exit %d\n%s", res.code, res.stderr)
	}
}
