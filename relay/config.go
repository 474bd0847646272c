package relay

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.yaml.in/yaml/v3"

	"github.com/outboxrelay/outbox/internal/didyoumean"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// Config is the relay's configuration, usually loaded from relay.yaml with
// LoadConfig. See docs/configuration.md for every key.
type Config struct {
	Database DatabaseConfig `yaml:"database"`
	Admin    AdminConfig    `yaml:"admin"`
	Delivery DeliveryConfig `yaml:"delivery"`
	// Source is the CloudEvents `source` attribute of every message. Defaults to
	// "/outbox/<schema>".
	Source       string              `yaml:"source"`
	Log          LogConfig           `yaml:"log"`
	Sinks        []SinkConfig        `yaml:"sinks"`
	Routes       []RouteConfig       `yaml:"routes"`
	DefaultRoute *DefaultRouteConfig `yaml:"default_route"`

	// File is the path the config was loaded from, for error messages.
	File string `yaml:"-"`
}

// DatabaseConfig says where the outbox is.
type DatabaseConfig struct {
	// URL is the PostgreSQL connection string. Required.
	URL string `yaml:"url"`
	// Schema holds the outbox tables. Defaults to "outbox".
	Schema string `yaml:"schema"`
	// Slot is the logical replication slot. Defaults to "outbox_relay".
	Slot string `yaml:"slot"`
	// Publication over the events table. Defaults to "outbox_events".
	Publication string `yaml:"publication"`
	// StandbyPoll is how often a standby relay tries to become active, and the
	// active one checks its lock. Defaults to 1s.
	StandbyPoll Duration `yaml:"standby_poll"`
	// FailoverSlot creates the slot with FAILOVER true (PostgreSQL 17 and
	// later), so that a physical standby with sync_replication_slots = on keeps
	// it and the relay resumes on the promoted standby without a new snapshot.
	// Defaults to false.
	FailoverSlot bool `yaml:"failover_slot"`
	// FailoverTimeout is how long PostgreSQL waits for an unresponsive active
	// relay before it ends its connections, releasing the leader lock and the
	// slot for a standby (TCP keepalives and tcp_user_timeout on the relay's
	// lock and replication connections). Defaults to 10s.
	FailoverTimeout Duration `yaml:"failover_timeout"`
	// SampleInterval is how often the relay samples slot lag and the backlog
	// (undelivered rows, oldest age) for its metrics. Defaults to 15s.
	SampleInterval Duration `yaml:"sample_interval"`
	// LagWarnBytes: slot lag above it logs a warning and sets
	// outbox_slot_lag_level to 1. Defaults to 1GiB.
	LagWarnBytes int64 `yaml:"lag_warn_bytes"`
	// LagPageBytes: slot lag above it logs an error and sets
	// outbox_slot_lag_level to 2. Defaults to 8GiB.
	LagPageBytes int64 `yaml:"lag_page_bytes"`
}

// AdminConfig configures the admin HTTP server.
type AdminConfig struct {
	// Listen is the address of /metrics, /healthz and /readyz. Defaults to
	// 127.0.0.1:9187; "off" disables the server.
	Listen string `yaml:"listen"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error. Defaults to info.
	Level string `yaml:"level"`
	// Format is json or text. Defaults to json.
	Format string `yaml:"format"`
}

// DeliveryConfig tunes the delivery pipeline.
type DeliveryConfig struct {
	// OnDelivered is what happens to a row once every route has handled it:
	// "mark" sets delivered_at, "delete" deletes the row. Defaults to mark.
	OnDelivered string `yaml:"on_delivered"`
	// MaxPending bounds the events held in memory between the replication
	// stream and the brokers; the relay stops reading when it is reached.
	// Defaults to 10000 (peak RSS under 100 MB with every sink, docs/performance.md).
	MaxPending int `yaml:"max_pending"`
	// MaxPendingBytes bounds the payload bytes held in memory the same way
	// (each event counts its payload plus 256 bytes). Defaults to 64MiB.
	MaxPendingBytes int64 `yaml:"max_pending_bytes"`
	// BatchSize is the most messages handed to one sink in one Publish call.
	// Defaults to 500.
	BatchSize int `yaml:"batch_size"`
	// BatchesInFlight is the most Publish calls in flight per sink. Defaults to 4.
	BatchesInFlight int `yaml:"batches_in_flight"`
	// MarkInterval is the longest a handled event waits before its row is
	// marked (or deleted); marks are written in one statement per flush.
	// Defaults to 50ms.
	MarkInterval Duration `yaml:"mark_interval"`
	// MarkBatch is the most rows marked in one statement. Defaults to 2000.
	MarkBatch int `yaml:"mark_batch"`
	// Retention, when set, makes the active relay delete delivered rows older
	// than this, in small batches, every RetentionInterval (what `outbox
	// prune --older-than` does). Defaults to off.
	Retention Duration `yaml:"retention"`
	// RetentionInterval is how often the retention runs. Defaults to 10m.
	RetentionInterval Duration `yaml:"retention_interval"`
	// StatusInterval is how often the relay reports its position to
	// PostgreSQL. A shorter interval means fewer events sent again after a
	// crash. Defaults to 250ms.
	StatusInterval Duration `yaml:"status_interval"`
	// ReadLinger makes the replication connection wait up to this long after
	// a read that emptied the socket and take what else arrived in one read:
	// at thousands of events per second, fewer system calls and wake-ups per
	// event and events handed on in batches, for up to this much more latency
	// per event. At most 100ms. Defaults to 1ms; "off" (LingerOff) turns it
	// off (docs/performance.md).
	ReadLinger Linger `yaml:"read_linger"`
}

// SinkConfig is one entry of `sinks`. Name and Type are common to every sink;
// the rest of the entry belongs to the sink type and is decoded by it.
type SinkConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	// Line is the entry's line in the config file.
	Line int `yaml:"-"`
	// Node is the whole entry, for the sink type to decode.
	Node *yaml.Node `yaml:"-"`
}

// UnmarshalYAML keeps the node for the sink type and reads the common keys.
func (s *SinkConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &ConfigError{Line: n.Line, Msg: "a sink must be a mapping with name and type"}
	}
	s.Line, s.Node = n.Line, n
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		switch k {
		case "name":
			s.Name = v.Value
		case "type":
			s.Type = v.Value
		}
	}
	return nil
}

// Decode decodes the sink entry into v (a sink type's config struct with yaml
// tags), rejecting keys that neither v nor the common keys know.
func (s *SinkConfig) Decode(v any) error {
	if s.Node == nil {
		return nil
	}
	if err := knownKeys(s.Node, v, "name", "type"); err != nil {
		return err
	}
	if err := s.Node.Decode(v); err != nil {
		// Sink configs hold plain time.Duration fields.
		msg := strings.ReplaceAll(cleanYAMLError(err), "into time.Duration", "into a duration (write it like 200ms, 30s or 5m)")
		return &ConfigError{Line: s.Line, Field: "sinks." + s.Name, Msg: msg}
	}
	return nil
}

// RouteConfig is one entry of `routes`.
type RouteConfig struct {
	// Name identifies the route in metrics, logs and dead letters. Required,
	// unique, and not "default" (the name of default_route).
	Name string `yaml:"name"`
	// Match is the event type: exact ("order.created") or a glob ("order.*").
	Match string `yaml:"match"`
	// AggregateType, when set, must equal the event's aggregate type.
	AggregateType string `yaml:"aggregate_type"`
	// Filter is an optional CEL expression over the envelope and payload.
	Filter string `yaml:"filter"`
	// Sink is the name of a configured sink.
	Sink string `yaml:"sink"`
	// Destination is a template over the envelope, e.g. "orders.{{.EventType}}".
	Destination string `yaml:"destination"`
	// Continue lets the event also match the routes after this one (fan-out).
	Continue bool        `yaml:"continue"`
	Retry    RetryConfig `yaml:"retry"`

	Line int `yaml:"-"`
}

// UnmarshalYAML records the route's line.
func (r *RouteConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain RouteConfig
	return decodeAt(n, (*plain)(r), &r.Line)
}

// decodeAt decodes n into v, a pointer to a struct of a type without
// UnmarshalYAML, after checking its keys, and records n's line.
func decodeAt(n *yaml.Node, v any, line *int) error {
	if err := knownKeys(n, v); err != nil {
		return err
	}
	if err := n.Decode(v); err != nil {
		return err
	}
	*line = n.Line
	return nil
}

// RetryConfig is a route's retry policy.
type RetryConfig struct {
	// MaxAttempts is how many times a message is tried before it is
	// dead-lettered. Defaults to 10; 0 in the file means the default.
	MaxAttempts int `yaml:"max_attempts"`
	// InitialInterval is the first backoff. Defaults to 200ms.
	InitialInterval Duration `yaml:"initial_interval"`
	// MaxInterval caps the backoff. Defaults to 30s.
	MaxInterval Duration `yaml:"max_interval"`
	// MaxElapsed, when set, dead-letters a message that has been failing for
	// longer than this, whatever its attempts. Defaults to no limit.
	MaxElapsed Duration `yaml:"max_elapsed"`
}

// DefaultRouteConfig handles events no route matched.
type DefaultRouteConfig struct {
	Sink        string      `yaml:"sink"`
	Destination string      `yaml:"destination"`
	Drop        bool        `yaml:"drop"`
	Retry       RetryConfig `yaml:"retry"`

	Line int `yaml:"-"`
}

// UnmarshalYAML records the default route's line.
func (r *DefaultRouteConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain DefaultRouteConfig
	return decodeAt(n, (*plain)(r), &r.Line)
}

// Duration is a time.Duration written as "200ms", "30s", "1h".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &ConfigError{Line: n.Line, Msg: fmt.Sprintf("bad duration %q: write it like 200ms, 30s or 5m", n.Value)}
	}
	if v < 0 {
		return &ConfigError{Line: n.Line, Msg: fmt.Sprintf("duration %q must not be negative", n.Value)}
	}
	*d = Duration(v)
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Linger is a Duration that can be turned off: "off" or "0s" in YAML,
// LingerOff in Go (the zero value means the default).
type Linger Duration

// LingerOff turns a Linger off.
const LingerOff Linger = -1

// UnmarshalYAML parses "off" or a Go duration string.
func (l *Linger) UnmarshalYAML(n *yaml.Node) error {
	if n.Value == "off" {
		*l = LingerOff
		return nil
	}
	var d Duration
	if err := d.UnmarshalYAML(n); err != nil {
		return &ConfigError{Line: n.Line, Msg: fmt.Sprintf("bad duration %q: write it like 1ms or 500us, or off", n.Value)}
	}
	*l = Linger(d)
	if d == 0 {
		*l = LingerOff
	}
	return nil
}

// D returns l as a time.Duration, 0 when off.
func (l Linger) D() time.Duration { return max(0, time.Duration(l)) }

// ConfigError is a problem with the configuration. Line is 0 when the problem is
// not tied to one line.
type ConfigError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrConfig matches every *ConfigError.
var ErrConfig = errors.New("invalid configuration")

// Is reports ConfigError as ErrConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandEnv replaces ${NAME} and ${NAME:-default} (the default also when NAME
// is empty, as in the shell). An unset or empty variable without a default is
// an error naming the line and saying which, so a missing secret is caught at
// start-up.
func expandEnv(src []byte, file string) ([]byte, error) {
	var errs []error
	lines := bytes.SplitAfter(src, []byte("\n"))
	for i, line := range lines {
		if bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			continue
		}
		lines[i] = envRef.ReplaceAllFunc(line, func(m []byte) []byte {
			sub := envRef.FindSubmatch(m)
			name := string(sub[1])
			v, set := os.LookupEnv(name)
			if v != "" {
				return []byte(v)
			}
			if len(sub[2]) > 0 {
				return sub[3]
			}
			msg := fmt.Sprintf("environment variable %s is not set (set it, or write ${%s:-default})", name, name)
			if set {
				msg = fmt.Sprintf("environment variable %s is set but empty (give it a value, or write ${%s:-default})", name, name)
			}
			errs = append(errs, &ConfigError{File: file, Line: i + 1, Msg: msg})
			return nil
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return bytes.Join(lines, nil), nil
}

// LoadConfig reads, expands and decodes a relay.yaml, fills defaults and
// checks everything that can be checked without the sinks (see Validate).
func LoadConfig(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &ConfigError{File: path, Msg: "config file not found (pass --config PATH; see docs/configuration.md for an example)"}
		}
		return nil, &ConfigError{File: path, Msg: err.Error()}
	}
	return ParseConfig(src, path)
}

// ParseConfig decodes a relay.yaml from memory. file names it in errors.
func ParseConfig(src []byte, file string) (*Config, error) {
	src, err := expandEnv(src, file)
	if err != nil {
		return nil, err
	}
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		return nil, yamlError(err, file)
	}
	if len(root.Content) == 0 {
		return nil, &ConfigError{File: file, Msg: "the config file is empty"}
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return nil, &ConfigError{File: file, Line: doc.Line, Msg: "the config must be a mapping with database, sinks and routes"}
	}
	cfg := &Config{File: file}
	if err := knownKeys(doc, cfg); err != nil {
		return nil, withFile(err, file)
	}
	if err := doc.Decode(cfg); err != nil {
		return nil, yamlError(err, file)
	}
	cfg.fill()
	return cfg, nil
}

func withFile(err error, file string) error {
	var ce *ConfigError
	if errors.As(err, &ce) && ce.File == "" {
		ce.File = file
	}
	return err
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

var yamlQuoted = regexp.MustCompile("`[^`]*`")

// cleanYAMLError trims the yaml prefix and leaves out the offending value
// (it may be a secret expanded from the environment into the wrong key).
func cleanYAMLError(err error) string {
	return yamlQuoted.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), "the value")
}

// yamlError turns a yaml error into ConfigErrors that carry the line.
func yamlError(err error, file string) error {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return withFile(ce, file)
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var errs []error
		for _, e := range te.Errors {
			errs = append(errs, lineError(yamlQuoted.ReplaceAllString(e, "the value"), file))
		}
		return errors.Join(errs...)
	}
	return lineError(cleanYAMLError(err), file)
}

func lineError(msg, file string) error {
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		var line int
		fmt.Sscan(m[1], &line)
		return &ConfigError{File: file, Line: line, Msg: m[2]}
	}
	return &ConfigError{File: file, Msg: msg}
}

// knownKeys rejects mapping keys of n that v's yaml tags (or extra) do not name,
// suggesting the nearest valid key. It descends into nested structs, lists of
// structs and maps of structs, except types that decode themselves.
func knownKeys(n *yaml.Node, v any, extra ...string) error {
	return checkKeys(n, reflect.TypeOf(v), extra)
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func checkKeys(n *yaml.Node, t reflect.Type, extra []string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n == nil || t.Kind() != reflect.Struct || n.Kind != yaml.MappingNode {
		return nil
	}
	fields := yamlFields(t)
	known := append(slices.Collect(maps.Keys(fields)), extra...)
	slices.Sort(known)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		ft, ok := fields[k.Value]
		if !ok {
			if slices.Contains(extra, k.Value) {
				continue
			}
			msg := fmt.Sprintf("unknown key %q", k.Value)
			if s := didyoumean.Suggest(k.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += fmt.Sprintf(" (valid keys: %s)", strings.Join(known, ", "))
			}
			return &ConfigError{Line: k.Line, Msg: msg}
		}
		if err := checkNested(val, ft); err != nil {
			return err
		}
	}
	return nil
}

func checkNested(n *yaml.Node, t reflect.Type) error {
	if reflect.PointerTo(t).Implements(unmarshalerType) || t.Implements(unmarshalerType) {
		return nil // decodes (and checks) itself
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkNested(n, t.Elem())
	case reflect.Struct:
		return checkKeys(n, t, nil)
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for _, c := range n.Content {
				if err := checkNested(c, t.Elem()); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 1; i < len(n.Content); i += 2 {
				if err := checkNested(n.Content[i], t.Elem()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// yamlFields maps the yaml keys of struct t to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if strings.Contains(opts, "inline") {
			maps.Copy(out, yamlFields(f.Type))
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func (c *Config) fill() {
	d := &c.Database
	d.Schema = cmp.Or(d.Schema, "outbox")
	d.Slot = cmp.Or(d.Slot, "outbox_relay")
	d.Publication = cmp.Or(d.Publication, "outbox_events")
	if d.StandbyPoll == 0 {
		d.StandbyPoll = Duration(time.Second)
	}
	d.FailoverTimeout = cmp.Or(d.FailoverTimeout, Duration(10*time.Second))
	d.SampleInterval = cmp.Or(d.SampleInterval, Duration(15*time.Second))
	d.LagWarnBytes = cmp.Or(d.LagWarnBytes, int64(1<<30))
	d.LagPageBytes = cmp.Or(d.LagPageBytes, int64(8<<30))
	c.Admin.Listen = cmp.Or(c.Admin.Listen, "127.0.0.1:9187")
	c.Log.Level = cmp.Or(c.Log.Level, "info")
	c.Log.Format = cmp.Or(c.Log.Format, "json")
	c.Source = cmp.Or(c.Source, "/outbox/"+d.Schema)
	dl := &c.Delivery
	dl.OnDelivered = cmp.Or(dl.OnDelivered, "mark")
	dl.MaxPending = cmp.Or(dl.MaxPending, 10000)
	dl.MaxPendingBytes = cmp.Or(dl.MaxPendingBytes, int64(64<<20))
	dl.BatchSize = cmp.Or(dl.BatchSize, 500)
	dl.BatchesInFlight = cmp.Or(dl.BatchesInFlight, 4)
	dl.MarkInterval = cmp.Or(dl.MarkInterval, Duration(50*time.Millisecond))
	dl.MarkBatch = cmp.Or(dl.MarkBatch, 2000)
	dl.RetentionInterval = cmp.Or(dl.RetentionInterval, Duration(10*time.Minute))
	dl.StatusInterval = cmp.Or(dl.StatusInterval, Duration(250*time.Millisecond))
	dl.ReadLinger = cmp.Or(dl.ReadLinger, Linger(time.Millisecond))
	for i := range c.Routes {
		c.Routes[i].Retry.fill()
	}
	if c.DefaultRoute != nil {
		c.DefaultRoute.Retry.fill()
	}
}

func (r *RetryConfig) fill() {
	r.MaxAttempts = cmp.Or(r.MaxAttempts, 10)
	r.InitialInterval = cmp.Or(r.InitialInterval, Duration(200*time.Millisecond))
	r.MaxInterval = cmp.Or(r.MaxInterval, Duration(30*time.Second))
}

// Validate checks the configuration as the relay does at start-up: required
// keys, names, sink references (sinkTypes lists the sink types this build
// knows), match globs, filters and destination templates. It returns every
// problem found, each naming its line.
func (c *Config) Validate(sinkTypes []string) error {
	var errs []error
	add := func(line int, field, format string, args ...any) {
		errs = append(errs, &ConfigError{File: c.File, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Database.URL == "" {
		add(0, "database.url", "required: the PostgreSQL connection string (usually url: ${DATABASE_URL})")
	} else if err := checkDatabaseURL(c.Database.URL); err != nil {
		add(0, "database.url", "%v", err)
	}
	if err := checkListen(c.Admin.Listen); err != nil {
		add(0, "admin.listen", "%v", err)
	}
	for _, f := range []struct{ name, v string }{{"database.schema", c.Database.Schema}, {"database.slot", c.Database.Slot}, {"database.publication", c.Database.Publication}} {
		if err := outboxschema.ValidateName(f.name, f.v); err != nil {
			add(0, f.name, "%v", err)
		}
	}
	if c.Delivery.ReadLinger.D() > 100*time.Millisecond {
		add(0, "delivery.read_linger", "must be at most 100ms (it adds up to its length to every event's latency), not %s", c.Delivery.ReadLinger.D())
	}
	switch c.Delivery.OnDelivered {
	case "mark", "delete":
	default:
		add(0, "delivery.on_delivered", "must be mark or delete, not %q", c.Delivery.OnDelivered)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		add(0, "log.format", "must be json or text, not %q", c.Log.Format)
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		add(0, "log.level", "%v", err)
	}
	if c.Delivery.MaxPending < 1 || c.Delivery.BatchSize < 1 || c.Delivery.BatchesInFlight < 1 || c.Delivery.MarkBatch < 1 {
		add(0, "delivery", "max_pending, batch_size, batches_in_flight and mark_batch must be positive")
	}

	sinkNames := map[string]bool{}
	var names []string
	for i, s := range c.Sinks {
		field := fmt.Sprintf("sinks[%d]", i)
		switch {
		case s.Name == "":
			add(s.Line, field, "a sink needs a name")
		case sinkNames[s.Name]:
			add(s.Line, field, "duplicate sink name %q", s.Name)
		}
		sinkNames[s.Name] = true
		names = append(names, s.Name)
		if !slices.Contains(sinkTypes, s.Type) {
			msg := fmt.Sprintf("unknown sink type %q", s.Type)
			if sg := didyoumean.Suggest(s.Type, sinkTypes); sg != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", sg)
			}
			add(s.Line, field+".type", "%s; valid types: %s", msg, strings.Join(sinkTypes, ", "))
		}
	}
	checkSink := func(line int, field, name string) {
		if name == "" {
			add(line, field, "sink is required")
			return
		}
		if !sinkNames[name] {
			msg := fmt.Sprintf("unknown sink %q", name)
			if sg := didyoumean.Suggest(name, names); sg != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", sg)
			} else if len(names) > 0 {
				msg += fmt.Sprintf(" (configured sinks: %s)", strings.Join(names, ", "))
			} else {
				msg += " (no sinks are configured)"
			}
			add(line, field, "%s", msg)
		}
	}
	checkRetry := func(line int, field string, r RetryConfig) {
		if r.MaxAttempts < 0 {
			add(line, field+".retry.max_attempts", "must be positive")
		}
		if r.MaxInterval < r.InitialInterval {
			add(line, field+".retry", "max_interval (%s) is shorter than initial_interval (%s)", r.MaxInterval.D(), r.InitialInterval.D())
		}
	}
	routeNames := map[string]int{}
	for i, r := range c.Routes {
		field := fmt.Sprintf("routes[%d]", i)
		if r.Name == "" {
			add(r.Line, field, "a route needs a name")
		} else if r.Name == defaultRouteName {
			add(r.Line, field, "the route name %q is reserved for default_route (it names default_route in metrics, logs, dead letters and replays); pick another name", r.Name)
		} else if prev, dup := routeNames[r.Name]; dup {
			add(r.Line, field, "duplicate route name %q (first used on line %d)", r.Name, prev)
		} else {
			routeNames[r.Name] = r.Line
		}
		if r.Match == "" {
			add(r.Line, field+".match", "required: an event type or a glob such as \"order.*\"")
		} else if err := validGlob(r.Match); err != nil {
			add(r.Line, field+".match", "%v", err)
		}
		checkSink(r.Line, field+".sink", r.Sink)
		if r.Destination == "" {
			add(r.Line, field+".destination", "required: a destination template such as \"orders.{{.EventType}}\"")
		} else if _, err := ParseDestination(r.Destination); err != nil {
			add(r.Line, field+".destination", "%v", err)
		}
		if r.Filter != "" {
			if _, err := compileFilter(r.Filter); err != nil {
				add(r.Line, field+".filter", "%v", err)
			}
		}
		checkRetry(r.Line, field, r.Retry)
	}
	if d := c.DefaultRoute; d != nil {
		if d.Drop {
			if d.Sink != "" || d.Destination != "" {
				add(d.Line, "default_route", "drop: true cannot be combined with sink or destination")
			}
		} else {
			checkSink(d.Line, "default_route.sink", d.Sink)
			if d.Destination == "" {
				add(d.Line, "default_route.destination", "required unless drop: true")
			} else if _, err := ParseDestination(d.Destination); err != nil {
				add(d.Line, "default_route.destination", "%v", err)
			}
			checkRetry(d.Line, "default_route", d.Retry)
		}
	}
	if len(c.Routes) == 0 && c.DefaultRoute == nil {
		add(0, "routes", "no routes and no default_route: every event would be dropped; add a route or default_route: {drop: true}")
	}
	return errors.Join(errs...)
}

// checkDatabaseURL parses a connection string as the relay's connections do
// (pgxpool's parser accepts what pgx and pgconn accept, and the pool keys).
// pgx masks the password in its error (TestDatabaseURLErrorsHidePassword);
// %v leaves out its ParseConfigError, whose ConnString field holds it.
func checkDatabaseURL(dsn string) error {
	if _, err := pgxpool.ParseConfig(dsn); err != nil {
		return fmt.Errorf("%v (write it like postgres://USER:PASSWORD@HOST:5432/DB?sslmode=require; percent-encode reserved characters in the password)", err)
	}
	return nil
}

// checkListen checks an address the admin server can listen on: "off",
// host:port or :port, the port a number from 0 to 65535 (or a service name).
// Whether the port is free is known only when the relay listens.
func checkListen(addr string) error {
	if addr == "off" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil && port != "" {
		_, err = net.LookupPort("tcp", port)
	}
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err)
		}
		return fmt.Errorf("%q is not an address to listen on: %v (write it like 127.0.0.1:9187 or :9187, with a port up to 65535, or \"off\")", addr, err)
	}
	return nil
}
