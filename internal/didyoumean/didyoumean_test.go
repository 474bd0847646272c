package didyoumean

import "testing"

func TestSuggest(t *testing.T) {
	types := []string{"kafka", "nats", "rabbitmq", "redis", "stdout"}
	for in, want := range map[string]string{"kafak": "kafka", "nast": "nats", "redsi": "redis", "zzzzzz": "", "KAFKA": "kafka"} {
		if got := Suggest(in, types); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", in, got, want)
		}
	}
}
