// Package outboxschema is the one definition of the outbox's tables: their SQL (the
// migrations, as embedded files), the names of their columns, and the rules for
// the schema, publication and slot names taken from configuration.
//
// Everything that reads or writes the outbox (the SDK, the relay, the
// dead-letter store, the migrator) takes the shape of its tables from here, so
// a column is added in one place. The package depends on the standard library
// only.
package outboxschema

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"text/template"
)

//go:embed sql/*.sql
var files embed.FS

// Quote returns name as a quoted PostgreSQL identifier.
func Quote(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// ValidateName reports whether name is usable as a schema, slot or publication
// name: 1 to 63 characters, lower-case letters, digits and underscores, not
// starting with a digit. Replication slot names allow only these characters, and
// keeping every configured name to the same set avoids case-folding surprises in
// hand-written SQL. what names the setting in the error ("schema", "slot", ...).
func ValidateName(what, name string) error {
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

// Migration is one version of the schema, rendered for a schema and publication
// name.
type Migration struct {
	Version int64
	// Name is the file name, e.g. "00001_outbox.sql".
	Name string
	// Source is the whole file, goose annotations included.
	Source string
}

// Up is the migration's up part, without the goose annotations.
func (m Migration) Up() string { u, _ := splitGoose(m.Source); return u }

// Down is the migration's down part, without the goose annotations.
func (m Migration) Down() string { _, d := splitGoose(m.Source); return d }

// Migrations returns every version, oldest first, rendered for the given
// schema and publication (both validated with ValidateName).
func Migrations(schemaName, publication string) ([]Migration, error) {
	if err := ValidateName("schema", schemaName); err != nil {
		return nil, err
	}
	if err := ValidateName("publication", publication); err != nil {
		return nil, err
	}
	data := struct{ Schema, Publication string }{Quote(schemaName), Quote(publication)}
	names, err := fs.Glob(files, "sql/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]Migration, 0, len(names))
	for _, p := range names {
		src, err := files.ReadFile(p)
		if err != nil {
			return nil, err
		}
		t, err := template.New(p).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", p, err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return nil, fmt.Errorf("render %s: %w", p, err)
		}
		m := Migration{Name: path.Base(p), Source: b.String()}
		if _, err := fmt.Sscanf(m.Name, "%d_", &m.Version); err != nil {
			return nil, fmt.Errorf("migration %s: no version number in its name", m.Name)
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, errors.New("no embedded migrations")
	}
	return out, nil
}

// Latest is the newest version this build knows.
func Latest() int64 {
	names, _ := fs.Glob(files, "sql/*.sql")
	var v int64
	for _, n := range names {
		var x int64
		fmt.Sscanf(path.Base(n), "%d_", &x)
		v = max(v, x)
	}
	return v
}

// splitGoose separates a goose SQL file into its up and down parts, dropping the
// goose annotations.
func splitGoose(src string) (up, down string) {
	var cur *strings.Builder
	var u, d strings.Builder
	for line := range strings.Lines(src) {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "-- +goose Up"):
			cur = &u
			continue
		case strings.HasPrefix(t, "-- +goose Down"):
			cur = &d
			continue
		case strings.HasPrefix(t, "-- +goose"):
			continue
		}
		if cur != nil {
			cur.WriteString(line)
		}
	}
	return u.String(), d.String()
}
