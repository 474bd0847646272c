// Package pgident validates and quotes PostgreSQL identifiers taken from
// configuration, so that no name from a config file or flag reaches SQL unquoted.
package pgident

import (
	"fmt"
	"strings"
)

// Quote returns name as a quoted PostgreSQL identifier.
func Quote(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// Validate reports whether name is usable as a schema, slot or publication name:
// 1 to 63 characters, lower-case letters, digits and underscores, not starting with
// a digit. Replication slot names allow only these characters, and keeping every
// configured name to the same set avoids case-folding surprises in hand-written SQL.
func Validate(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s must not be empty", what)
	}
	if len(name) > 63 {
		return fmt.Errorf("%s %q is longer than 63 characters", what, name)
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r == '_':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return fmt.Errorf("%s %q may only contain lower-case letters, digits and underscores, and must not start with a digit", what, name)
		}
	}
	return nil
}
