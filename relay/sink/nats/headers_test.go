package nats

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/sinktest"
)

// TestHeaders: an event header NATS cannot carry unchanged fails its message
// permanently, before sending, with an error naming the header: a name
// nats.go refuses (it answers "message could not decode headers" on every
// attempt, and the key never moved again), a value it would change (CR or LF
// into spaces, white space at either end trimmed; a CR LF could otherwise look
// like a header of its own to a reader that splits lines). Headers that are
// only unusual arrive unchanged, as the SDK's inbox.FromNATS reads them.
func TestHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.sink(t, f.url, 10*time.Second)
	defer s.Close()
	dest := f.prefix + ".headers"
	refused := []struct{ name, value, reason string }{
		{"ünï key", "v", "printable ASCII"},
		{"a b", "v", "printable ASCII"},
		{"tab\tname", "v", "printable ASCII"},
		{"ctl\x01", "v", "printable ASCII"},
		{"a:b", "v", "may not contain"},
		{"a/b", "v", "may not contain"},
		{"", "v", "empty"},
		{"crlf", "line1\r\nInjected: yes", "space"},
		{"lf", "x\n", "space"},
		{"lead", " padded", "white space"},
		{"trail", "padded\t", "white space"},
	}
	odd := map[string]string{
		"x-unicode-value":           "välue ✓",
		"quote":                     `a "quoted" \ value`,
		"empty":                     "",
		"long":                      strings.Repeat("L", 8000),
		"inner":                     "a\tb  c",
		"X.Odd_Name~!#$%&'*+^`|-09": "v",
	}
	var msgs []*sink.Message
	for _, c := range refused {
		m := sinktest.NewMessage(dest, "refused", 0)
		m.Headers = maps.Clone(odd)
		m.Headers[c.name] = c.value
		msgs = append(msgs, m)
	}
	good := sinktest.NewMessage(dest, "odd", 0)
	good.Headers = maps.Clone(odd)
	msgs = append(msgs, good)

	errs := s.Publish(context.Background(), msgs)
	if len(errs) != len(msgs) {
		t.Fatalf("Publish = %v, want one result per message", errs)
	}
	for i, c := range refused {
		var herr *HeaderError
		err := errs[i]
		switch {
		case !sink.Permanent(err) || !errors.As(err, &herr):
			t.Errorf("header %q: %q: got %v, want a permanent *HeaderError", c.name, c.value, err)
		case herr.Header != c.name || !strings.Contains(err.Error(), c.reason) || !strings.Contains(err.Error(), msgs[i].Event.ID.String()):
			t.Errorf("header %q: %q: error %q should name the header, the event and why (%s)", c.name, c.value, err, c.reason)
		default:
			t.Log(err)
		}
	}
	if err := errs[len(errs)-1]; err != nil {
		t.Fatalf("the message with headers NATS can carry: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := f.consume(ctx, t, dest, 1)
	if len(got) != 1 || got[0].ID != good.Event.ID.String() {
		t.Fatalf("consumed %d messages, want only the one with headers NATS can carry", len(got))
	}
	env, err := got[0].Inbox, got[0].InboxErr
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(env.Headers, odd) {
		t.Errorf("inbox.FromNATS read headers %q, want %q", env.Headers, odd)
	}
}

func TestCheckHeadersReserved(t *testing.T) {
	// Headers the sink leaves out are not checked.
	if err := CheckHeaders("id", map[string]string{"Nats-Expected-Stream": " x ", "ce-type": "a\nb", "ok": "v"}); err != nil {
		t.Errorf("CheckHeaders = %v, want nil: the sink does not send reserved headers", err)
	}
	// The first bad header by name, and how many more.
	err := CheckHeaders("id", map[string]string{"b b": "v", "a a": "v", "ok": "v"})
	var herr *HeaderError
	if !errors.As(err, &herr) || herr.Header != "a a" || !strings.Contains(err.Error(), "and 1 more") {
		t.Errorf("CheckHeaders = %v, want the error for \"a a\" and 1 more", err)
	}
}
