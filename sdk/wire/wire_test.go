package wire_test

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/outboxrelay/outbox/sdk/wire"
)

func TestNATSPercentEncoding(t *testing.T) {
	for in, want := range map[string]string{
		"order.created": "order.created",
		"a b":           "a%20b",
		`"q"`:           "%22q%22",
		"50%":           "50%25",
		"café":          "caf%C3%A9",
		"nul\x00":       "nul%00",
		"":              "",
	} {
		got := wire.NATSEncode(in)
		if got != want {
			t.Errorf("NATSEncode(%q) = %q, want %q", in, got, want)
		}
		// Any percent-decoder reads it back, ours and net/url's.
		if back, err := wire.NATSDecode(got); err != nil || back != in {
			t.Errorf("NATSDecode(%q) = %q, %v; want %q", got, back, err, in)
		}
		if back, err := url.PathUnescape(got); err != nil || back != in {
			t.Errorf("url.PathUnescape(%q) = %q, %v; want %q", got, back, err, in)
		}
	}
	for _, bad := range []string{"100%", "%4", "%zz", "a%g0"} {
		if got, err := wire.NATSDecode(bad); err == nil {
			t.Errorf("NATSDecode(%q) = %q, want an error", bad, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { wire.NATSEncode("order.created") }); n != 0 {
		t.Errorf("NATSEncode of a clean value allocates %v times", n)
	}
}

func FuzzNATSEncoding(f *testing.F) {
	for _, s := range []string{"", "a b", "%", "%%41", "ünï\x00\xff", "\"q\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := wire.NATSEncode(s)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c <= ' ' || c >= 0x7f || c == '"' {
				t.Fatalf("NATSEncode(%q) = %q keeps byte %#x", s, enc, c)
			}
		}
		if back, err := wire.NATSDecode(enc); err != nil || back != s {
			t.Fatalf("NATSDecode(NATSEncode(%q)) = %q, %v", s, back, err)
		}
		// Decoding outside input never panics, and what decodes encodes to
		// the canonical form of the same bytes.
		if dec, err := wire.NATSDecode(s); err == nil {
			if again, _ := wire.NATSDecode(wire.NATSEncode(dec)); again != dec {
				t.Fatalf("%q: decode/encode/decode gave %q, want %q", s, again, dec)
			}
		}
	})
}

// The name functions answer for every attribute, and a name they produce is
// one the matching reader function maps back: a sink and a reader agree on
// every attribute, including ones added later.
func TestBindingNames(t *testing.T) {
	attrs := []string{wire.AttrSpecVersion, wire.AttrID, wire.AttrSource, wire.AttrType, wire.AttrSubject, wire.AttrTime,
		wire.AttrDataContentType, wire.AttrDataSchema, wire.AttrAggregateType, wire.AttrSchemaVersion, wire.AttrTenantID,
		"traceparent", "someextension"}
	type binding struct {
		name     string
		write    func(string) string
		read     func(string) (string, bool)
		reserved func(string) bool
		want     string // the name of attribute "id"
	}
	for _, b := range []binding{
		{"kafka", wire.KafkaHeader, wire.KafkaAttr, wire.KafkaReserved, "ce_id"},
		{"nats", wire.NATSHeader, wire.NATSAttr, wire.NATSReserved, "ce-id"},
		{"amqp", wire.AMQPProperty, wire.AMQPAttr, wire.AMQPReserved, "cloudEvents_id"},
	} {
		if got := b.write(wire.AttrID); got != b.want {
			t.Errorf("%s: id travels as %q, want %q", b.name, got, b.want)
		}
		for _, a := range attrs {
			h := b.write(a)
			if got, ok := b.read(h); !ok || got != a {
				t.Errorf("%s: %q reads back as %q, %v; want %q", b.name, h, got, ok, a)
			}
			if got, ok := b.read(strings.ToUpper(h)); !ok || got != a {
				t.Errorf("%s: %q reads back as %q, %v; want %q", b.name, strings.ToUpper(h), got, ok, a)
			}
			if !b.reserved(h) {
				t.Errorf("%s: an event header named %q would pass for attribute %q", b.name, h, a)
			}
		}
		if n := testing.AllocsPerRun(100, func() { b.write(wire.AttrTenantID) }); n != 0 {
			t.Errorf("%s: the name of a known attribute allocates %v times", b.name, n)
		}
		for _, h := range []string{"traceparent", "tracestate", "x-user-id", "ce", "cloudEvents"} {
			if _, ok := b.read(h); ok || b.reserved(h) {
				t.Errorf("%s: event header %q is taken for an attribute", b.name, h)
			}
		}
	}
	for h, want := range map[string]bool{"content-type": true, "Content-Type": true, "CE_ID": true, "ce-id": false, "Nats-Rollup": false} {
		if got := wire.KafkaReserved(h); got != want {
			t.Errorf("KafkaReserved(%q) = %v, want %v", h, got, want)
		}
	}
	for h, want := range map[string]bool{"Content-Type": true, "Ce-Id": true, "Nats-Rollup": true, "nats-expected-stream": true, "ce_id": false, "natsx": false} {
		if got := wire.NATSReserved(h); got != want {
			t.Errorf("NATSReserved(%q) = %v, want %v", h, got, want)
		}
	}
	if a, ok := wire.AMQPAttr("cloudEvents:time"); !ok || a != "time" {
		t.Errorf("AMQP colon prefix: %q, %v", a, ok)
	}
}

func TestRedisHeaders(t *testing.T) {
	h := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x-kunde": "Müller ✓ 東京 <&>", "id": "not the event id"}
	enc := wire.RedisEncodeHeaders(h)
	if !utf8.Valid(enc) {
		t.Fatalf("headers field %q is not UTF-8", enc)
	}
	back, err := wire.RedisDecodeHeaders(enc)
	if err != nil || len(back) != len(h) {
		t.Fatalf("RedisDecodeHeaders(%s) = %v, %v", enc, back, err)
	}
	for k, v := range h {
		if back[k] != v {
			t.Errorf("header %q: got %q, want %q", k, back[k], v)
		}
	}
	for _, bad := range []string{"", "[]", `{"a":1}`, "{"} {
		if _, err := wire.RedisDecodeHeaders([]byte(bad)); err == nil {
			t.Errorf("RedisDecodeHeaders(%q) accepted", bad)
		}
	}
}
