package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://u:hunter2@h:5672/vhost": "amqp://u:xxxxx@h:5672/vhost",
		"redis://h:6379/0":              "redis://h:6379/0",
		"redis://u:hunter2%zz@h/":       "<unparsable URL>",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestURLs(t *testing.T) {
	in := "nats://u:hunter2@a:4222, nats://b:4222,nats://u:hunter2%zz@c"
	if got, want := URLs(in), "nats://u:xxxxx@a:4222,nats://b:4222,<unparsable URL>"; got != want {
		t.Errorf("URLs(%q) = %q, want %q", in, got, want)
	}
}

func TestParseURL(t *testing.T) {
	if u, err := ParseURL("redis://u:hunter2@h:6379/0"); err != nil || u.Host != "h:6379" {
		t.Errorf("ParseURL = %v, %v", u, err)
	}
	for _, in := range []string{"redis://u:hunter2@h:99x/", "redis://u:hunter2%zz@h/", "amqp://u:hunter2@[h/"} {
		_, err := ParseURL(in)
		if err == nil || !strings.HasPrefix(err.Error(), "url: does not parse") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseURL(%q): got %v, want an error that names url and hides the password", in, err)
		}
	}
}
