package outboxschema

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"
)

// DecodeHeaders decodes the events table's headers column (jsonb text) into
// a string map: the one reading of it, for the relay and the SDK alike. A
// value that is not a JSON string (a row written by hand) is kept as its JSON
// text. Anything but a JSON object is an error, and so is a header whose name
// or value is not valid UTF-8 (possible in a SQL_ASCII database), naming the
// header. An empty object is a nil map.
func DecodeHeaders(b []byte) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return nil, fmt.Errorf("a JSON %s, want an object of strings", ute.Value)
		}
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if len(raw) == 0 {
		return nil, nil
	}
	if !utf8.Valid(b) {
		// encoding/json keeps a raw value's bytes and replaces those that
		// are not UTF-8 in a name with U+FFFD.
		names := slices.Sorted(maps.Keys(raw))
		for _, k := range names {
			if !utf8.Valid(raw[k]) {
				return nil, fmt.Errorf("header %q: the value is not valid UTF-8", k)
			}
		}
		for _, k := range names {
			if strings.ContainsRune(k, utf8.RuneError) {
				return nil, fmt.Errorf("header %q: the name is not valid UTF-8", k)
			}
		}
	}
	h := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			h[k] = s
		} else {
			h[k] = string(v)
		}
	}
	return h, nil
}
