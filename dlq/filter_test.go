package dlq

import (
	"path"
	"regexp"
	"testing"
	"unicode/utf8"
)

// FuzzGlobRegexp checks that an event-type glob selects in SQL exactly what it
// selects in the router (path.Match). Go's regexp syntax agrees with
// PostgreSQL's for what globRegexp emits.
func FuzzGlobRegexp(f *testing.F) {
	for _, s := range [][2]string{
		{"order.*", "order.created"}, {"order.c?eated", "order.created"}, {"[op]*.[cf]*", "payment.failed"},
		{`a\*b`, "a*b"}, {"[^a-c]x", "dx"}, {"a.b", "axb"}, {"*", "a/b"}, {"[\\]]", "]"}, {"(x|y)+", "x"}, {"ü?", "üé"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, glob, name string) {
		if !utf8.ValidString(glob) || !utf8.ValidString(name) {
			return // PostgreSQL text is always valid UTF-8
		}
		f := &Filter{EventType: glob}
		if f.Validate() != nil {
			return
		}
		want, err := path.Match(glob, name)
		if err != nil {
			t.Fatalf("glob %q passed Validate but path.Match says %v", glob, err)
		}
		re, err := regexp.Compile(globRegexp(glob))
		if err != nil {
			t.Fatalf("glob %q: regexp %q: %v", glob, globRegexp(glob), err)
		}
		if got := re.MatchString(name); got != want {
			t.Fatalf("glob %q, name %q: regexp %q says %v, path.Match %v", glob, name, globRegexp(glob), got, want)
		}
	})
}
