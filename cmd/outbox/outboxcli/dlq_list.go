package outboxcli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/dlq"
)

func (a *app) dlqListCmd() *cobra.Command {
	var t target
	var f filterFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest id first",
		Example: `  outbox dlq list --route orders --since 24h
  outbox dlq list --event-type 'order.*' --status failed --json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			store, flt, pool, err := f.open(c, &t, false)
			if err != nil {
				return err
			}
			defer pool.Close()
			// One row more than the limit says whether there are more.
			q := flt
			if q.Limit > 0 {
				q.Limit++
			}
			ls, err := store.List(c.Context(), q)
			if err != nil {
				return dlqError(err, false)
			}
			more := flt.Limit > 0 && len(ls) > flt.Limit
			if more {
				ls = ls[:flt.Limit]
			}
			out := c.OutOrStdout()
			if asJSON {
				if ls == nil {
					ls = []dlq.Letter{}
				}
				return json.NewEncoder(out).Encode(ls)
			}
			if len(ls) == 0 {
				fmt.Fprintln(out, "no dead letters match")
				return nil
			}
			if err := letterTable(out, ls, true); err != nil {
				return err
			}
			if more {
				fmt.Fprintf(out, "(the first %d; pass --limit 0 for all, or narrow the filters)\n", flt.Limit)
			}
			return nil
		},
	}
	t.add(cmd, false)
	f.add(cmd, true, false, 100)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}
