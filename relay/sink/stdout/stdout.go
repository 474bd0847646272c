// Package stdout writes each event as one JSON line, for demos, debugging and
// piping into other tools. A write is "delivered" once it reached the writer.
package stdout

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unicode/utf8"

	"github.com/outboxrelay/outbox/internal/inflight"
	"github.com/outboxrelay/outbox/relay/sink"
)

// ErrClosed is returned for messages published after Close.
var ErrClosed = errors.New("stdout: sink closed")

// Config configures the sink.
type Config struct {
	// Pretty indents each JSON object (more than one line per event).
	// Defaults to false.
	Pretty bool `yaml:"pretty"`
}

// Sink writes JSON lines. It is safe for concurrent use; Publish calls
// write one at a time.
type Sink struct {
	calls inflight.Gate // Publish calls in progress; closed by Close
	mu    sync.Mutex    // one Publish writes at a time
	w     *bufio.Writer
	cfg   Config
}

var _ sink.Sink = (*Sink)(nil)

// New returns a sink writing to w (os.Stdout when nil).
func New(w io.Writer, cfg Config) *Sink {
	if w == nil {
		w = os.Stdout
	}
	return &Sink{w: bufio.NewWriterSize(w, 64<<10), cfg: cfg}
}

// Line is the JSON object written per event.
type Line struct {
	SpecVersion string `json:"specversion"`
	ID          string `json:"id"`
	Source      string `json:"source"`
	Type        string `json:"type"`
	Subject     string `json:"subject"`
	// Time is occurred_at in RFC 3339; for 'infinity' or a year outside
	// 0000-9999 it is absent and OccurredAt carries the value
	// (sink.TimeAttribute).
	Time            string            `json:"time,omitempty"`
	OccurredAt      string            `json:"occurredat,omitempty"`
	DataContentType string            `json:"datacontenttype"`
	AggregateType   string            `json:"aggregatetype"`
	SchemaVersion   string            `json:"schemaversion"`
	TenantID        string            `json:"tenantid,omitempty"`
	Route           string            `json:"route"`
	Destination     string            `json:"destination"`
	Headers         map[string]string `json:"headers,omitempty"`
	// Data is the payload itself when it is JSON, else absent.
	Data json.RawMessage `json:"data,omitempty"`
	// DataBase64 is the payload when it is not JSON.
	DataBase64 []byte `json:"data_base64,omitempty"`
}

// Encode returns m's line.
func Encode(m *sink.Message) Line {
	e := m.Event
	l := Line{SpecVersion: "1.0", ID: e.ID.String(), Source: m.Source, Type: e.EventType, Subject: e.AggregateID,
		DataContentType: e.ContentType, AggregateType: e.AggregateType,
		SchemaVersion: e.SchemaVersion, TenantID: e.TenantID, Route: m.Route, Destination: m.Destination, Headers: m.Headers}
	if a := sink.TimeAttribute(e); a.Name == sink.CETime {
		l.Time = a.Value
	} else {
		l.OccurredAt = a.Value
	}
	if utf8.Valid(e.Payload) && json.Valid(e.Payload) {
		l.Data = e.Payload
	} else {
		l.DataBase64 = e.Payload
	}
	return l
}

// Publish writes one line per message and flushes.
func (s *Sink) Publish(ctx context.Context, msgs []*sink.Message) []error {
	if !s.calls.Enter() {
		return sink.AllFailed(len(msgs), ErrClosed)
	}
	defer s.calls.Leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	enc := json.NewEncoder(s.w)
	if s.cfg.Pretty {
		enc.SetIndent("", "  ")
	}
	for _, m := range msgs {
		if err := enc.Encode(Encode(m)); err != nil {
			return sink.AllFailed(len(msgs), fmt.Errorf("stdout: %w", err))
		}
	}
	if err := s.w.Flush(); err != nil {
		return sink.AllFailed(len(msgs), fmt.Errorf("stdout: %w", err))
	}
	return nil
}

// Close turns away new Publish calls, waits for the ones in progress, and
// flushes. A second Close returns nil at once.
func (s *Sink) Close() error {
	if !s.calls.Close() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Flush()
}
