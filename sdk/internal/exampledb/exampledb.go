// Package exampledb gives the SDK's runnable examples (example_test.go files
// with "// Output:") a real, freshly migrated outbox, and skips them, like the
// tests, when no PostgreSQL is configured.
package exampledb

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/outboxrelay/outbox/sdk/internal/testdb"
)

// Main runs a package's tests and examples. Without a database it skips the
// examples (which cannot skip themselves) and says how to start one, unless
// OUTBOX_TEST_REQUIRE_SERVICES=1, where they run and fail.
func Main(m interface{ Run() int }) {
	flag.Parse()
	if err := testdb.Available(); err != nil && os.Getenv("OUTBOX_TEST_REQUIRE_SERVICES") != "1" {
		fmt.Fprintf(os.Stderr, "examples skipped: PostgreSQL not available (%v): start it with `scripts/services.sh up` and export `scripts/services.sh env`\n", err)
		skip := "^Example"
		if f := flag.Lookup("test.skip"); f != nil && f.Value.String() != "" {
			skip += "|" + f.Value.String()
		}
		flag.Set("test.skip", skip)
	}
	os.Exit(m.Run())
}

// Outbox is a migrated outbox in a schema of its own.
type Outbox = testdb.Outbox

// New migrates a fresh outbox schema. It panics on failure: an example has no
// other way to fail. The caller closes it.
func New() *Outbox {
	o, err := testdb.Open(context.Background())
	if err != nil {
		panic(err)
	}
	return o
}
