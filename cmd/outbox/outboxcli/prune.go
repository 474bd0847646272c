package outboxcli

import (
	"encoding/json"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/internal/retention"
)

// pruneJSON is the --json output of `outbox prune`.
type pruneJSON struct {
	*retention.Result
	OlderThanSeconds float64 `json:"older_than_seconds"`
	MaxBatchSeconds  float64 `json:"max_batch_seconds"`
	Interrupted      bool    `json:"interrupted,omitempty"`
}

func (a *app) pruneCmd() *cobra.Command {
	var t target
	var olderThan, pause string
	var batchSize int
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "prune --older-than DURATION",
		Short: "Delete delivered events older than a duration, in small batches",
		Long: "Delete rows of the events table that the relay has delivered and that were created more than\n" +
			"--older-than ago. Rows not yet delivered are never deleted. Each batch of --batch-size rows is\n" +
			"one short DELETE in its own transaction: it locks only the old rows it deletes, so writers and\n" +
			"the relay carry on meanwhile. Interrupting it (Ctrl-C) stops after the current batch.",
		Example: `  outbox prune --older-than 7d --dry-run
  outbox prune --config relay.yaml --older-than 168h`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if olderThan == "" {
				return usageErr("e.g. --older-than 7d (or 168h)", "--older-than is required: how old a delivered event must be to be deleted")
			}
			age, err := parseDuration("--older-than", olderThan)
			if err != nil {
				return err
			}
			if age <= 0 {
				return usageErr("e.g. --older-than 7d (or 168h)", "--older-than must be positive")
			}
			if batchSize < 1 || batchSize > 100000 {
				return usageErr("the default, 1000, keeps each statement short", "--batch-size must be between 1 and 100000, not %d", batchSize)
			}
			pauseD, err := parseDuration("--pause", pause)
			if err != nil {
				return err
			}
			r, err := t.resolve(c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			pool, err := openPool(ctx, r, "outbox prune", "events")
			if err != nil {
				return err
			}
			defer pool.Close()
			now, err := serverNow(ctx, pool)
			if err != nil {
				return runtimeErr(fmt.Errorf("read the clock: %w", err), "")
			}
			res, perr := retention.Prune(ctx, pool, retention.Options{Schema: r.schema, Before: now.Add(-age).UTC(),
				BatchSize: batchSize, Pause: pauseD, DryRun: dryRun})
			interrupted := perr != nil && ctx.Err() != nil && res != nil
			if perr != nil && !interrupted {
				return dbError(fmt.Errorf("prune: %w", perr), "the batches before the error are deleted; run it again to continue")
			}
			out := c.OutOrStdout()
			if asJSON {
				err := json.NewEncoder(out).Encode(pruneJSON{Result: res, OlderThanSeconds: age.Seconds(),
					MaxBatchSeconds: res.MaxBatch.Seconds(), Interrupted: interrupted})
				if err != nil {
					return err
				}
			} else if dryRun {
				fmt.Fprintf(out, "would delete %d delivered events created before %s (dry run: nothing was changed)\n", res.Deleted, fmtTime(res.Before))
			} else {
				batches := "batches"
				if res.Batches == 1 {
					batches = "batch"
				}
				fmt.Fprintf(out, "deleted %d delivered events created before %s in %d %s; longest batch %s\n",
					res.Deleted, fmtTime(res.Before), res.Batches, batches, res.MaxBatch.Round(time.Millisecond))
			}
			if interrupted {
				return runtimeErr(fmt.Errorf("interrupted after deleting %d rows", res.Deleted), "run it again to continue")
			}
			return nil
		},
	}
	t.add(cmd, false)
	fl := cmd.Flags()
	fl.StringVar(&olderThan, "older-than", "", "delete delivered events created longer ago than this: 168h, 7d, 1d12h (required)")
	fl.IntVar(&batchSize, "batch-size", 1000, "rows per DELETE statement")
	fl.StringVar(&pause, "pause", "0s", "sleep between batches, to spare a busy server")
	fl.BoolVar(&dryRun, "dry-run", false, "count the rows that would be deleted and change nothing")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
