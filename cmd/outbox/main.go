// Command outbox is the transactional outbox relay and its operator tools.
// See `outbox help` and docs/.
package main

import (
	"os"

	"github.com/outboxrelay/outbox/cmd/outbox/outboxcli"
)

func main() {
	os.Exit(outboxcli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
