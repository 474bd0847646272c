package relay

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/outboxrelay/outbox/internal/didyoumean"
	"github.com/outboxrelay/outbox/relay/sink"
)

// SinkDestinations returns the compiled destinations of cfg's routes (the
// default route's included) by the name of the sink they use: what a sink
// that declares or subscribes to its destinations ahead needs (NATS). A sink
// that no route uses has no entry. cfg must have passed Validate.
func SinkDestinations(cfg *Config) (map[string][]*Destination, error) {
	r, err := newRouter(cfg)
	if err != nil {
		return nil, err
	}
	dests := map[string][]*Destination{}
	for _, rt := range r.routes {
		dests[rt.Sink] = append(dests[rt.Sink], rt.Destination)
	}
	return dests, nil
}

// Destination is a compiled destination template.
type Destination struct {
	src   string
	parts []destPart // fast path: literal text and field references
	tmpl  *template.Template
}

type destPart struct {
	lit   string
	field func(*Event) string
}

var destFields = map[string]func(*Event) string{
	"EventType":     func(e *Event) string { return e.EventType },
	"AggregateType": func(e *Event) string { return e.AggregateType },
	"AggregateID":   func(e *Event) string { return e.AggregateID },
	"TenantID":      func(e *Event) string { return e.TenantID },
	"SchemaVersion": func(e *Event) string { return e.SchemaVersion },
	"ContentType":   func(e *Event) string { return e.ContentType },
	"ID":            func(e *Event) string { return e.ID.String() },
}

func destFieldNames() []string {
	names := make([]string, 0, len(destFields))
	for k := range destFields {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// templateEvent is what a destination template sees.
type templateEvent struct {
	ID, EventType, AggregateType, AggregateID, TenantID, SchemaVersion, ContentType string
	Headers                                                                         map[string]string
}

// ParseDestination compiles a destination template such as
// "orders.{{.EventType}}". Templates that only reference envelope fields take a
// fast path; others run through text/template.
func ParseDestination(src string) (*Destination, error) {
	t, err := template.New("destination").Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("bad destination template %q: %v", src, strings.TrimPrefix(err.Error(), "template: destination:"))
	}
	d := &Destination{src: src, tmpl: t}
	// Check field references now, so a typo fails at start-up, not per event.
	if err := checkTemplateFields(t.Tree.Root); err != nil {
		return nil, fmt.Errorf("bad destination template %q: %v", src, err)
	}
	if parts, ok := fastParts(t.Tree.Root); ok {
		d.parts = parts
	}
	sample := &Event{EventType: "x", AggregateType: "x", AggregateID: "x", TenantID: "x", SchemaVersion: "1.0", ContentType: "x", Headers: map[string]string{}}
	if _, err := d.Render(sample); err != nil && !strings.Contains(err.Error(), "rendered empty") {
		return nil, fmt.Errorf("bad destination template %q: %v", src, err)
	}
	return d, nil
}

func checkTemplateFields(n parse.Node) error {
	var err error
	var walk func(parse.Node)
	walk = func(n parse.Node) {
		if n == nil || err != nil {
			return
		}
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.FieldNode:
			name := n.Ident[0]
			if _, ok := destFields[name]; !ok && name != "Headers" {
				msg := fmt.Sprintf("unknown field .%s", name)
				if s := didyoumean.Suggest(name, append(destFieldNames(), "Headers")); s != "" {
					msg += fmt.Sprintf(" (did you mean .%s?)", s)
				} else {
					msg += fmt.Sprintf(" (fields: %s, Headers)", strings.Join(destFieldNames(), ", "))
				}
				err = errors.New(msg)
			}
		case *parse.IfNode:
			walkBranch(walk, &n.BranchNode)
		case *parse.RangeNode:
			walkBranch(walk, &n.BranchNode)
		case *parse.WithNode:
			walkBranch(walk, &n.BranchNode)
		}
	}
	walk(n)
	return err
}

func walkBranch(walk func(parse.Node), b *parse.BranchNode) {
	walk(b.Pipe)
	if b.List != nil {
		walk(b.List)
	}
	if b.ElseList != nil {
		walk(b.ElseList)
	}
}

func fastParts(root *parse.ListNode) ([]destPart, bool) {
	var parts []destPart
	for _, n := range root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			parts = append(parts, destPart{lit: string(n.Text)})
		case *parse.ActionNode:
			if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 {
				return nil, false
			}
			f, ok := n.Pipe.Cmds[0].Args[0].(*parse.FieldNode)
			if !ok || len(f.Ident) != 1 {
				return nil, false
			}
			fn, ok := destFields[f.Ident[0]]
			if !ok {
				return nil, false
			}
			parts = append(parts, destPart{field: fn})
		default:
			return nil, false
		}
	}
	return parts, true
}

// Render returns the destination of ev. An empty result is an error: a
// message with no destination is permanently undeliverable.
func (d *Destination) Render(ev *Event) (string, error) {
	var s string
	if d.parts != nil {
		if len(d.parts) == 1 && d.parts[0].field == nil {
			s = d.parts[0].lit
		} else {
			var b strings.Builder
			for _, p := range d.parts {
				if p.field != nil {
					b.WriteString(p.field(ev))
				} else {
					b.WriteString(p.lit)
				}
			}
			s = b.String()
		}
	} else {
		var b bytes.Buffer
		err := d.tmpl.Execute(&b, templateEvent{ID: ev.ID.String(), EventType: ev.EventType, AggregateType: ev.AggregateType,
			AggregateID: ev.AggregateID, TenantID: ev.TenantID, SchemaVersion: ev.SchemaVersion, ContentType: ev.ContentType, Headers: ev.Headers})
		if err != nil {
			return "", sink.Permanentf("destination %q: %v", d.src, err)
		}
		s = b.String()
	}
	if s == "" {
		return "", sink.Permanentf("destination %q rendered empty for event %s", d.src, ev.ID)
	}
	return s, nil
}

// LiteralPrefix returns the text before the template's first action, and
// whether the template is nothing but that text.
func (d *Destination) LiteralPrefix() (prefix string, literal bool) {
	if i := strings.Index(d.src, "{{"); i >= 0 {
		return d.src[:i], false
	}
	return d.src, true
}

// String returns the template source.
func (d *Destination) String() string { return d.src }
