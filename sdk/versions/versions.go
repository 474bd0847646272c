// Package versions decodes event payloads by their schema_version into the Go
// type the reader knows, upgrading older payloads with registered upcasters.
//
// Versions are "MAJOR.MINOR". A minor version is a compatible change (fields
// added, none removed or changed in meaning), so a reader decodes any payload
// of its own major directly, older or newer minor alike. A major version is a
// breaking change: a payload of an older major is upgraded step by step by
// upcasters registered from older to newer versions (1.0 -> 1.1 -> 2.0), and a
// payload of a newer major than the reader knows fails with
// [ErrUnknownMajor] (deploy the newer reader first).
//
// Upcasters registered between minor versions of one major also run when
// they lead toward the reader's version, so they can fill in defaults.
//
// The reader's current version of an event type is the SchemaVersion of its
// Go type (an [sdk.Versioned]); payloads are JSON.
package versions

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"

	"github.com/outboxrelay/outbox/sdk"
)

// Errors, matched with errors.Is; each arrives wrapped in a [*VersionError].
var (
	// ErrUnknownMajor: the payload's major version is newer than the
	// reader's.
	ErrUnknownMajor = errors.New("unknown major version")
	// ErrNoUpcaster: the payload's major is older than the reader's and no
	// registered upcaster leads from it to the reader's version.
	ErrNoUpcaster = errors.New("no upcaster")
	// ErrInvalidVersion: the stored schema_version is not MAJOR.MINOR.
	ErrInvalidVersion = errors.New("invalid schema version")
	// ErrUnknownEventType: Registry.Decode was asked for an event type that
	// no Register call made known.
	ErrUnknownEventType = errors.New("unknown event type")
	// ErrWrongType: Decode[T] was called for an event of a type T does not
	// describe.
	ErrWrongType = errors.New("event type does not match the Go type")
	// ErrDecode: the (upcast) payload does not decode into the Go type, or
	// an upcaster failed.
	ErrDecode = errors.New("cannot decode payload")
)

// VersionError says which event type and version could not be decoded.
type VersionError struct {
	EventType string
	// Version is the version being decoded when it failed (the stored one,
	// or an intermediate one during upcasting).
	Version string
	// Reader is the version the reader decodes into.
	Reader string
	Err    error
	// Cause is the underlying failure (a JSON or upcaster error), if any.
	Cause error
}

func (e *VersionError) Error() string {
	msg := fmt.Sprintf("versions: %s %s (reader %s): %v", e.EventType, e.Version, e.Reader, e.Err)
	switch {
	case e.Cause != nil:
		msg += ": " + e.Cause.Error()
	case errors.Is(e.Err, ErrUnknownMajor):
		msg += ": deploy a reader that knows this version before writers produce it"
	case errors.Is(e.Err, ErrNoUpcaster):
		msg += ": register an upcaster from this version (AddUpcaster or Upcast)"
	}
	return msg
}

// Unwrap returns the sentinel and the cause.
func (e *VersionError) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Err, e.Cause}
	}
	return []error{e.Err}
}

type version struct{ major, minor int }

func (v version) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

func (v version) less(w version) bool {
	return v.major < w.major || (v.major == w.major && v.minor < w.minor)
}

func parse(s string) (version, error) {
	maj, min, err := sdk.ParseSchemaVersion(s)
	return version{maj, min}, err
}

type upcaster struct {
	from, to version
	fn       func(payload []byte) ([]byte, error)
}

type eventType struct {
	goType  reflect.Type // nil when only upcasters are known
	current version
	ups     map[version]upcaster // by from
}

// Registry holds the Go types and upcasters of event types. Register
// everything at start-up; afterwards a Registry is safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	types map[string]*eventType
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{types: map[string]*eventType{}}
}

func (r *Registry) entry(name string) *eventType {
	et := r.types[name]
	if et == nil {
		et = &eventType{ups: map[version]upcaster{}}
		r.types[name] = et
	}
	return et
}

// Register makes T the reader's type for T's event type: Registry.Decode
// returns T values, at T's schema version. One Go type per event type.
func Register[T sdk.Versioned](r *Registry) error {
	var zero T
	name := zero.EventType()
	v, err := parse(zero.SchemaVersion())
	if err != nil {
		return fmt.Errorf("versions: register %T: %w", zero, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	et := r.entry(name)
	if et.goType != nil && et.goType != reflect.TypeFor[T]() {
		return fmt.Errorf("versions: register %T: event type %s is already read as %v", zero, name, et.goType)
	}
	et.goType, et.current = reflect.TypeFor[T](), v
	return nil
}

// AddUpcaster registers fn to turn a payload of eventType at version from
// into one at version to, which must be newer. One upcaster per (event type,
// from version).
func (r *Registry) AddUpcaster(eventType, from, to string, fn func(payload []byte) ([]byte, error)) error {
	f, err := parse(from)
	if err != nil {
		return fmt.Errorf("versions: upcaster for %s: %w", eventType, err)
	}
	t, err := parse(to)
	if err != nil {
		return fmt.Errorf("versions: upcaster for %s: %w", eventType, err)
	}
	if !f.less(t) {
		return fmt.Errorf("versions: upcaster for %s: %s -> %s does not lead to a newer version", eventType, from, to)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	et := r.entry(eventType)
	if old, dup := et.ups[f]; dup {
		return fmt.Errorf("versions: upcaster for %s from %s already registered (to %s)", eventType, from, old.to)
	}
	et.ups[f] = upcaster{from: f, to: t, fn: fn}
	return nil
}

// Upcast registers fn, a typed upcaster from one Go type of an event type to
// a newer one, as a JSON upcaster from From's version to To's version.
func Upcast[From, To sdk.Versioned](r *Registry, fn func(From) (To, error)) error {
	var from From
	var to To
	if from.EventType() != to.EventType() {
		return fmt.Errorf("versions: upcaster %T -> %T changes the event type (%s -> %s)", from, to, from.EventType(), to.EventType())
	}
	return r.AddUpcaster(from.EventType(), from.SchemaVersion(), to.SchemaVersion(), func(payload []byte) ([]byte, error) {
		var old From
		if err := json.Unmarshal(payload, &old); err != nil {
			return nil, err
		}
		nv, err := fn(old)
		if err != nil {
			return nil, err
		}
		return json.Marshal(nv)
	})
}

// Upgrade runs upcasters on a payload of eventType stored at version until it
// is at a version of reader's major. It returns the version reached and the
// payload at that version.
func (r *Registry) Upgrade(eventType, stored, reader string, payload []byte) (string, []byte, error) {
	target, err := parse(reader)
	if err != nil {
		return "", nil, &VersionError{EventType: eventType, Version: stored, Reader: reader, Err: ErrInvalidVersion, Cause: err}
	}
	v, p, err := r.upgrade(eventType, stored, target, payload)
	if err != nil {
		return "", nil, err
	}
	return v.String(), p, nil
}

func (r *Registry) upgrade(name, stored string, target version, payload []byte) (version, []byte, error) {
	fail := func(at string, sentinel, cause error) (version, []byte, error) {
		return version{}, nil, &VersionError{EventType: name, Version: at, Reader: target.String(), Err: sentinel, Cause: cause}
	}
	cur, err := parse(stored)
	if err != nil {
		return fail(stored, ErrInvalidVersion, err)
	}
	var ups map[version]upcaster
	if r != nil {
		// Held while upcasters run: registering is for start-up.
		r.mu.RLock()
		defer r.mu.RUnlock()
		if et := r.types[name]; et != nil {
			ups = et.ups
		}
	}
	for steps := 0; ; steps++ {
		if cur == target {
			return cur, payload, nil
		}
		if target.less(cur) && cur.major > target.major {
			return fail(cur.String(), ErrUnknownMajor, nil)
		}
		up, ok := ups[cur]
		if !ok || target.less(up.to) {
			if cur.major == target.major {
				// Minor versions of one major are compatible.
				return cur, payload, nil
			}
			// An older major without an upcaster from exactly this
			// version: minor versions are compatible, so use the
			// upcaster of the nearest version of the same major
			// (the highest at or below, else the lowest above).
			up, ok = nearest(ups, cur, target)
			if !ok {
				return fail(cur.String(), ErrNoUpcaster, nil)
			}
		}
		if steps > len(ups) {
			return fail(cur.String(), ErrNoUpcaster, errors.New("upcasters do not converge"))
		}
		next, err := up.fn(payload)
		if err != nil {
			return fail(cur.String(), ErrDecode, fmt.Errorf("upcaster %s -> %s: %w", up.from, up.to, err))
		}
		cur, payload = up.to, next
	}
}

func nearest(ups map[version]upcaster, cur, target version) (upcaster, bool) {
	var same []upcaster
	for _, u := range ups {
		if u.from.major == cur.major && cur.less(u.to) && !target.less(u.to) {
			same = append(same, u)
		}
	}
	if len(same) == 0 {
		return upcaster{}, false
	}
	sort.Slice(same, func(i, j int) bool { return same[i].from.less(same[j].from) })
	best := same[0]
	for _, u := range same {
		if !cur.less(u.from) {
			best = u
		}
	}
	return best, true
}

// Decode decodes a payload of eventType stored at version into T, T being the
// reader's Go type of that event type at its schema version. Older payloads
// are upcast with r's upcasters (r may be nil when there are none).
func Decode[T sdk.Versioned](r *Registry, eventType, stored string, payload []byte) (T, error) {
	var out T
	if eventType != out.EventType() {
		return out, &VersionError{EventType: eventType, Version: stored, Reader: out.SchemaVersion(), Err: ErrWrongType,
			Cause: fmt.Errorf("%T reads %s", out, out.EventType())}
	}
	target, err := parse(out.SchemaVersion())
	if err != nil {
		return out, &VersionError{EventType: eventType, Version: stored, Reader: out.SchemaVersion(), Err: ErrInvalidVersion, Cause: err}
	}
	_, p, err := r.upgrade(eventType, stored, target, payload)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(p, &out); err != nil {
		return out, &VersionError{EventType: eventType, Version: stored, Reader: target.String(), Err: ErrDecode, Cause: err}
	}
	return out, nil
}

// DecodeEvent is Decode for a stored or received event.
func DecodeEvent[T sdk.Versioned](r *Registry, e sdk.Event) (T, error) {
	stored := e.SchemaVersion
	if stored == "" {
		stored = sdk.DefaultSchemaVersion
	}
	return Decode[T](r, e.EventType, stored, e.Payload)
}

// Decode decodes a payload into the Go type registered for eventType (with
// Register) and returns it as a value of that type, for consumers that
// dispatch with a type switch.
func (r *Registry) Decode(eventType, stored string, payload []byte) (any, error) {
	r.mu.RLock()
	et := r.types[eventType]
	var goType reflect.Type
	var current version
	if et != nil {
		goType, current = et.goType, et.current
	}
	r.mu.RUnlock()
	if goType == nil {
		return nil, &VersionError{EventType: eventType, Version: stored, Err: ErrUnknownEventType,
			Cause: errors.New("register its Go type with versions.Register")}
	}
	_, p, err := r.upgrade(eventType, stored, current, payload)
	if err != nil {
		return nil, err
	}
	ptr := reflect.New(goType)
	if err := json.Unmarshal(p, ptr.Interface()); err != nil {
		return nil, &VersionError{EventType: eventType, Version: stored, Reader: current.String(), Err: ErrDecode, Cause: err}
	}
	return ptr.Elem().Interface(), nil
}
