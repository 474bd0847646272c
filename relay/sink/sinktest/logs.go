package sinktest

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Logs captures a sink's log lines as JSON.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// NewLogs returns a logger that writes to the returned Logs, with the
// attribute the relay gives the logger of a sink configured under name:
// logger.With("sink", name).
func NewLogs(name string) (*slog.Logger, *Logs) {
	l := &Logs{}
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})).With("sink", name), l
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Lines returns every line logged so far, decoded.
func (l *Logs) Lines(t testing.TB) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if dup := duplicateKey(line); dup != "" {
			t.Errorf("log line has %q twice (the second hides the first): %s", dup, line)
		}
		out = append(out, m)
	}
	return out
}

// Check fails t unless the sink logged at least one line and every line
// carries the configured name as "sink" (once) and the sink's kind as
// "type".
func (l *Logs) Check(t testing.TB, name, kind string) {
	t.Helper()
	lines := l.Lines(t)
	if len(lines) == 0 {
		t.Fatal("the sink logged nothing")
	}
	for _, m := range lines {
		if m["sink"] != name || m["type"] != kind {
			t.Errorf("log line %q: sink=%v type=%v, want sink=%q type=%q", m["msg"], m["sink"], m["type"], name, kind)
		}
	}
}

// duplicateKey returns a top-level key that occurs twice in the JSON
// object line, or "".
func duplicateKey(line string) string {
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil { // {
		return ""
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		k, _ := tok.(string)
		if seen[k] {
			return k
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}
