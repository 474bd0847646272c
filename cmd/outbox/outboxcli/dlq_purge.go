package outboxcli

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/dlq"
)

func (a *app) dlqPurgeCmd() *cobra.Command {
	var t target
	var f filterFlags
	var asJSON, dryRun, yes bool
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Delete dead letters",
		Long: "Delete the selected dead letters for good, in one transaction. Deleting more than one row needs\n" +
			"--yes; without it nothing is deleted. Rows a replay is working on (requested or delivering) are\n" +
			"kept and listed.",
		Example: `  outbox dlq purge --id 42
  outbox dlq purge --route orders --until 30d --dry-run
  outbox dlq purge --route orders --until 30d --yes`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			store, flt, pool, err := f.open(c, &t, true)
			if err != nil {
				return err
			}
			defer pool.Close()
			opts := dlq.PurgeOptions{DryRun: dryRun}
			if !yes {
				opts.Max = 1
			}
			res, err := store.Purge(c.Context(), flt, opts)
			var tm *dlq.TooManyError
			if errors.As(err, &tm) {
				return usageErr(fmt.Sprintf("see them with `%s --dry-run`, then add --yes", c.CommandPath()),
					"this would delete %d dead letters; pass --yes to delete more than one (nothing was deleted)", tm.Count)
			}
			if err != nil {
				return dlqError(err, true)
			}
			out := c.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(res)
			}
			return printChange(out, res.Deleted, res.DryRun, "no dead letters to delete", "would delete", "deleted",
				leftAlone{"kept, a replay is working on them", res.Skipped})
		},
	}
	t.add(cmd, false)
	f.add(cmd, true, true, 0)
	fl := cmd.Flags()
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	fl.BoolVar(&dryRun, "dry-run", false, "show what would be deleted and change nothing")
	fl.BoolVar(&yes, "yes", false, "confirm deleting more than one dead letter")
	return cmd
}
