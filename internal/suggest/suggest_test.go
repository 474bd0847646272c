package suggest

import "testing"

func TestNearest(t *testing.T) {
	types := []string{"kafka", "nats", "rabbitmq", "redis", "stdout"}
	for in, want := range map[string]string{"kafak": "kafka", "NAST": "nats", "redsi": "redis", "zzzzzz": "", "": ""} {
		if got := Nearest(in, types); got != want {
			t.Errorf("Nearest(%q) = %q, want %q", in, got, want)
		}
	}
}
