package outboxcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/dlq"
)

// replayJSON is the --json output of `outbox dlq replay`.
type replayJSON struct {
	*dlq.ReplayResult
	// Outcomes are set with --wait.
	Outcomes []dlq.Outcome `json:"outcomes,omitempty"`
	// Pending are the rows whose replay had not finished when --wait gave up.
	Pending []dlq.Letter `json:"pending,omitempty"`
}

func (a *app) dlqReplayCmd() *cobra.Command {
	var t target
	var f filterFlags
	var asJSON, dryRun, again, wait bool
	var timeoutFlag string
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Ask the active relay to deliver dead letters again",
		Long: "Ask the active relay to deliver the selected dead letters again. Each goes to the route that\n" +
			"failed only, with the destination rendered from the relay's current config, and keeps its\n" +
			"event id (consumers that dedupe by id see it once). Rows a replay is already working on are\n" +
			"not requested twice, so two operators replaying at once never send a row twice. Rows replayed\n" +
			"before are left alone unless --again is given.\n\n" +
			"With --wait the command blocks until each replay is delivered or fails again, prints each\n" +
			"outcome and exits 1 if any failed or the --timeout passed.",
		Example: `  outbox dlq replay --id 42,43 --wait
  outbox dlq replay --route orders --since 2h --dry-run
  outbox dlq replay --config relay.yaml --event-type 'payment.*' --wait --timeout 10m`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if dryRun && wait {
				return usageErr("drop one of them: --dry-run changes nothing, so there is nothing to wait for", "--dry-run and --wait conflict")
			}
			if c.Flags().Changed("timeout") && !wait {
				return usageErr("add --wait, or drop --timeout", "--timeout applies only with --wait")
			}
			timeout, err := parseDuration("--timeout", timeoutFlag)
			if err != nil {
				return err
			}
			if timeout == 0 {
				return usageErr("", "--timeout must be positive")
			}
			store, flt, pool, err := f.open(c, &t, true)
			if err != nil {
				return err
			}
			defer pool.Close()
			res, err := store.RequestReplay(c.Context(), flt, dlq.ReplayOptions{Again: again, DryRun: dryRun})
			if err != nil {
				return dlqError(err, true)
			}
			out := c.OutOrStdout()
			if !asJSON {
				if err := printChange(out, res.Requested, res.DryRun, "no dead letters to replay", "would request a replay of", "requested a replay of",
					leftAlone{"already being replayed, not requested again", res.InProgress},
					leftAlone{"replayed before, left alone (pass --again to replay them again)", res.Replayed}); err != nil {
					return err
				}
			}
			if !wait || len(res.Requested) == 0 {
				if asJSON {
					return json.NewEncoder(out).Encode(replayJSON{ReplayResult: res})
				}
				return nil
			}

			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if !asJSON {
				fmt.Fprintf(out, "waiting up to %s for the relay to replay them...\n", timeout)
			}
			outcomes, werr := store.Wait(ctx, res.IDs(), &dlq.WaitOptions{OnOutcome: func(o dlq.Outcome) {
				if !asJSON {
					printOutcome(out, &o)
				}
			}})
			var we *dlq.WaitError
			if werr != nil && !errors.As(werr, &we) {
				return dlqError(werr, true)
			}
			failed := 0
			for i := range outcomes {
				if outcomes[i].Failed() {
					failed++
				}
			}
			if asJSON {
				v := replayJSON{ReplayResult: res, Outcomes: outcomes}
				if v.Outcomes == nil {
					v.Outcomes = []dlq.Outcome{}
				}
				if we != nil {
					v.Pending = we.Pending
				}
				if err := json.NewEncoder(out).Encode(v); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "replayed %d, failed %d", len(outcomes)-failed, failed)
				if we != nil {
					fmt.Fprintf(out, ", not finished %d", len(we.Pending))
				}
				fmt.Fprintln(out)
			}
			if we != nil {
				return waitError(we, timeout)
			}
			if failed > 0 {
				return runtimeErr(fmt.Errorf("%d of %d replays failed", failed, len(outcomes)),
					"see why with `outbox dlq show ID`; fix the cause and replay them again")
			}
			return nil
		},
	}
	t.add(cmd, false)
	f.add(cmd, false, true, 0)
	fl := cmd.Flags()
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	fl.BoolVar(&dryRun, "dry-run", false, "show what would be requested and change nothing")
	fl.BoolVar(&again, "again", false, "also replay rows that were replayed before")
	fl.BoolVar(&wait, "wait", false, "wait until each replay is delivered or fails again; exit 1 if any failed")
	fl.StringVar(&timeoutFlag, "timeout", "5m", "how long --wait waits")
	return cmd
}

func printOutcome(w io.Writer, o *dlq.Outcome) {
	switch {
	case o.Gone:
		fmt.Fprintf(w, "%d gone: the dead letter was deleted while waiting\n", o.ID)
	case o.ReplayStatus == dlq.StatusReplayed:
		fmt.Fprintf(w, "%d replayed: event %s to route %s (%s), replay %d\n", o.ID, o.EventID, o.Route, o.Destination, o.ReplayCount)
	default:
		fmt.Fprintf(w, "%d failed again: %s (attempts %d)\n", o.ID, truncate(o.LastError, 200), o.Attempts)
	}
}

// waitError explains why --wait gave up.
func waitError(we *dlq.WaitError, timeout time.Duration) error {
	requested := 0
	for _, l := range we.Pending {
		if l.ReplayStatus == dlq.StatusRequested {
			requested++
		}
	}
	hint := fmt.Sprintf("the relay is still delivering them: follow with `outbox dlq list --id %s`, or wait longer with --timeout", joinIDsComma(letterIDs(we.Pending)))
	if requested == len(we.Pending) {
		hint = "no relay has picked them up: check that a relay is running and active (`outbox status`); the requests stay and are delivered when one is"
	}
	if errors.Is(we.Err, context.Canceled) {
		return runtimeErr(fmt.Errorf("interrupted: %d replays not finished yet", len(we.Pending)), "the requests stay; the relay delivers them anyway")
	}
	return runtimeErr(fmt.Errorf("%d replays not finished after %s (ids %s)", len(we.Pending), timeout, dlq.JoinIDs(letterIDs(we.Pending))), hint)
}

func joinIDsComma(ids []int64) string {
	s := ""
	for i, id := range ids {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprint(id)
	}
	return s
}
