package outboxschema

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// tableColumns returns the columns of CREATE TABLE name in the up migrations,
// in order, with those ALTER TABLE ... ADD COLUMN adds after them.
func tableColumns(t *testing.T, name string) []string {
	t.Helper()
	ms, err := Migrations("outbox", "outbox_events")
	if err != nil {
		t.Fatal(err)
	}
	create := regexp.MustCompile(`(?s)CREATE TABLE "outbox"\.` + name + ` \((.*?)\n\)`)
	add := regexp.MustCompile(`ALTER TABLE "outbox"\.` + name + `\s+ADD COLUMN (\w+)`)
	var cols []string
	for _, m := range ms {
		up := m.Up()
		if c := create.FindStringSubmatch(up); c != nil {
			for line := range strings.Lines(c[1]) {
				f := strings.Fields(line)
				if len(f) < 2 || f[0] == "--" || strings.ToUpper(f[0]) == f[0] {
					continue // a comment or a table constraint (UNIQUE, CHECK)
				}
				cols = append(cols, f[0])
			}
		}
		for _, a := range add.FindAllStringSubmatch(up, -1) {
			cols = append(cols, a[1])
		}
	}
	if len(cols) == 0 {
		t.Fatalf("no CREATE TABLE %s in the migrations", name)
	}
	return cols
}

// TestColumnsMatchTheMigrations: the column lists are the tables' columns,
// in table order; an event's columns come first in the events table, and the
// rest is the relay's bookkeeping.
func TestColumnsMatchTheMigrations(t *testing.T) {
	events := tableColumns(t, "events")
	want := ColumnNames(EventColumns)
	if !slices.Equal(events[:min(len(want), len(events))], want) {
		t.Errorf("events table columns %v; EventColumns %v", events, want)
	}
	if rest := events[len(want):]; !slices.Equal(rest, []string{"delivered_at", "seq"}) {
		t.Errorf("events table columns after the event's: %v, want delivered_at, seq (add a new event column to EventColumns)", rest)
	}
	if got, want := ColumnNames(WrittenEventColumns), ColumnNames(EventColumns); !slices.Equal(got, slices.DeleteFunc(want, func(c string) bool { return c == "created_at" })) {
		t.Errorf("WrittenEventColumns %v, want EventColumns without created_at", got)
	}
	if got, want := tableColumns(t, "dead_letters"), ColumnNames(DeadLetterColumns); !slices.Equal(got, want) {
		t.Errorf("dead_letters table columns %v; DeadLetterColumns %v", got, want)
	}
	ev, dl := ColumnNames(EventColumns), ColumnNames(DeadLetterEventColumns)
	if dl[0] != "event_id" || !slices.Equal(ev[1:], dl[1:]) {
		t.Errorf("DeadLetterEventColumns %v, want EventColumns with event_id for id", dl)
	}
}

// TestReplayStatusesMatchTheMigrations: the statuses are those the
// dead_letters table's CHECK constraint allows.
func TestReplayStatusesMatchTheMigrations(t *testing.T) {
	ms, err := Migrations("outbox", "outbox_events")
	if err != nil {
		t.Fatal(err)
	}
	check := regexp.MustCompile(`CHECK \(replay_status IN \(([^)]*)\)\)`).FindStringSubmatch(ms[0].Up())
	if check == nil {
		t.Fatal("no CHECK on replay_status in the first migration")
	}
	var allowed []string
	for _, s := range strings.Split(check[1], ",") {
		allowed = append(allowed, strings.Trim(strings.TrimSpace(s), "'"))
	}
	if !slices.Equal(allowed, ReplayStatuses()) {
		t.Errorf("the table allows replay statuses %v; ReplayStatuses %v", allowed, ReplayStatuses())
	}
	if def := regexp.MustCompile(`replay_status\s+text\s+NOT NULL DEFAULT '(\w+)'`).FindStringSubmatch(ms[0].Up()); def == nil || def[1] != ReplayNone {
		t.Errorf("replay_status default %v, want %q", def, ReplayNone)
	}
}
