package outboxcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/dlq"
)

func (a *app) dlqCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, replay and purge dead letters",
		Long: "Dead letters are events a route could not deliver: retries exhausted, or a permanent error.\n" +
			"Each row is one (event, route). `outbox dlq replay` asks the active relay to deliver them again,\n" +
			"to the failed route only and with the same event id.",
	}
	cmd.AddCommand(a.dlqListCmd(), a.dlqShowCmd(), a.dlqReplayCmd(), a.dlqPurgeCmd())
	return cmd
}

// openDLQ connects and returns the dead-letter store of the target outbox.
func openDLQ(c *cobra.Command, t *target) (*dlq.Store, *pgxpool.Pool, error) {
	r, err := t.resolve(c)
	if err != nil {
		return nil, nil, err
	}
	pool, err := openPool(c.Context(), r, "outbox dlq", "dead_letters")
	if err != nil {
		return nil, nil, err
	}
	s, err := dlq.New(pool, r.schema)
	if err != nil {
		pool.Close()
		return nil, nil, usageErr("", "%v", err)
	}
	return s, pool, nil
}

// filterFlags select dead letters.
type filterFlags struct {
	idArgs    []string
	ids       []int64
	eventID   string
	route     string
	eventType string
	aggregate string
	since     string
	until     string
	status    string
	limit     int
	all       bool
}

// add registers the filter flags. withStatus adds --status, withAll adds
// --all (which commands that change rows require to act on every row).
func (f *filterFlags) add(c *cobra.Command, withStatus, withAll bool, defLimit int) {
	fl := c.Flags()
	fl.StringSliceVar(&f.idArgs, "id", nil, "dead-letter `ids` (repeat or separate with commas); cannot be combined with filters")
	fl.StringVar(&f.eventID, "event-id", "", "the dead letters of one event (its UUID)")
	fl.StringVar(&f.route, "route", "", "route name")
	fl.StringVar(&f.eventType, "event-type", "", "event type, exact or a glob such as \"order.*\"")
	fl.StringVar(&f.aggregate, "aggregate", "", "aggregate as TYPE:ID, or TYPE alone")
	fl.StringVar(&f.since, "since", "", "last failed at or after: 2026-03-01T12:00:00Z, 2026-03-01, or an age such as 2h or 7d")
	fl.StringVar(&f.until, "until", "", "last failed before: a time or an age, as for --since")
	if withStatus {
		fl.StringVar(&f.status, "status", "", "replay status: "+strings.Join(statusNames(), ", "))
	}
	limitHelp := "at most this many rows, lowest ids first (0: no limit)"
	fl.IntVar(&f.limit, "limit", defLimit, limitHelp)
	if withAll {
		fl.BoolVar(&f.all, "all", false, "select every dead letter (when no --id or filter is given)")
	}
}

func statusNames() []string {
	out := make([]string, len(dlq.Statuses))
	for i, s := range dlq.Statuses {
		out[i] = string(s)
	}
	return out
}

// open checks the filter flags, then connects to the target outbox: it
// returns its dead-letter store, the filter, and the pool to close.
// needSelection is as for filter.
func (f *filterFlags) open(c *cobra.Command, t *target, needSelection bool) (*dlq.Store, dlq.Filter, *pgxpool.Pool, error) {
	flt, err := f.filter(c, needSelection)
	if err != nil {
		return nil, dlq.Filter{}, nil, err
	}
	store, pool, err := openDLQ(c, t)
	if err != nil {
		return nil, dlq.Filter{}, nil, err
	}
	return store, flt, pool, nil
}

// filter builds the dlq.Filter. needSelection makes a command that changes
// rows insist on --id, a filter, or --all.
func (f *filterFlags) filter(c *cobra.Command, needSelection bool) (dlq.Filter, error) {
	f.ids = nil
	for _, s := range f.idArgs {
		id, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || id <= 0 {
			hint := "the ID column of `outbox dlq list` has the ids"
			if _, uerr := uuid.Parse(s); uerr == nil {
				hint = "that is an event id: select by it with --event-id"
			}
			return dlq.Filter{}, usageErr(hint, "--id: bad dead-letter id %q: want a positive integer", s)
		}
		f.ids = append(f.ids, id)
	}
	var set []string
	for _, name := range []string{"event-id", "route", "event-type", "aggregate", "since", "until", "status"} {
		if fl := c.Flags().Lookup(name); fl != nil && fl.Changed {
			set = append(set, "--"+name)
		}
	}
	cmdPath := c.CommandPath()
	if len(f.ids) > 0 && len(set) > 0 {
		return dlq.Filter{}, usageErr("select rows either by --id or by filters, not both",
			"--id conflicts with %s", strings.Join(set, ", "))
	}
	if f.all && (len(f.ids) > 0 || len(set) > 0) {
		if len(f.ids) > 0 {
			set = append(set, "--id")
		}
		return dlq.Filter{}, usageErr("drop --all to act on the selected rows only", "--all conflicts with %s", strings.Join(set, ", "))
	}
	if needSelection && len(f.ids) == 0 && len(set) == 0 && !f.all {
		return dlq.Filter{}, usageErr(fmt.Sprintf("e.g. `%s --id 42` or `%s --route orders`; see `outbox dlq list`", cmdPath, cmdPath),
			"say which dead letters: pass --id, a filter (--route, --event-type, --aggregate, --since, --until, --event-id), or --all")
	}
	if f.limit < 0 {
		return dlq.Filter{}, usageErr("", "--limit must not be negative")
	}
	out := dlq.Filter{IDs: f.ids, Route: f.route, EventType: f.eventType, Status: dlq.Status(f.status), Limit: f.limit}
	if f.eventID != "" {
		id, err := uuid.Parse(f.eventID)
		if err != nil {
			return dlq.Filter{}, usageErr("an event id is a UUID such as 0190f5c4-7b1e-7c3a-9d2e-3f4a5b6c7d8e", "--event-id: bad UUID %q", f.eventID)
		}
		out.EventID = id
	}
	if f.aggregate != "" {
		typ, id, err := dlq.ParseAggregate(f.aggregate)
		if err != nil {
			return dlq.Filter{}, usageErr("", "--aggregate: %v", err)
		}
		out.AggregateType, out.AggregateID = typ, id
	}
	now := clientNow()
	var err error
	if f.since != "" {
		if out.Since, err = parseTime("--since", f.since, now); err != nil {
			return dlq.Filter{}, err
		}
	}
	if f.until != "" {
		if out.Until, err = parseTime("--until", f.until, now); err != nil {
			return dlq.Filter{}, err
		}
	}
	if err := out.Validate(); err != nil {
		return dlq.Filter{}, usageErr("", "%v", err)
	}
	return out, nil
}

// dlqError turns the store's errors into exit codes with hints.
func dlqError(err error, changing bool) error {
	if err == nil {
		return nil
	}
	var nf *dlq.NotFoundError
	switch {
	case errors.As(err, &nf):
		if changing {
			err = fmt.Errorf("%w; nothing was changed", err)
		}
		return runtimeErr(err, "see the dead letters and their ids with `outbox dlq list`")
	case errors.Is(err, dlq.ErrBadFilter):
		return usageErr("", "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return runtimeErr(err, "PostgreSQL did not answer in time; try again")
	}
	return dbError(err, "")
}

// fmtTime formats a time for tables: UTC, to the second.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

// truncate shortens s to n runes, on one line, with control characters
// escaped (escapeControls).
func truncate(s string, n int) string {
	s = escapeControls(strings.Join(strings.Fields(s), " "), false)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-3]) + "..."
}

func aggregateOf(l *dlq.Letter) string { return l.AggregateType + ":" + l.AggregateID }

func replayOf(l *dlq.Letter) string {
	if l.ReplayCount > 0 {
		return fmt.Sprintf("%s (%d)", l.ReplayStatus, l.ReplayCount)
	}
	return string(l.ReplayStatus)
}

// letterTable prints dead letters as a table.
func letterTable(w io.Writer, ls []dlq.Letter, withError bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "ID\tLAST FAILED\tROUTE\tEVENT TYPE\tAGGREGATE\tEVENT ID\tATTEMPTS\tREPLAY"
	if withError {
		head += "\tLAST ERROR"
	}
	fmt.Fprintln(tw, head)
	for i := range ls {
		l := &ls[i]
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s", l.ID, fmtTime(l.LastFailedAt), escapeControls(l.Route, false), escapeControls(l.EventType, false),
			truncate(aggregateOf(l), 40), l.EventID, l.Attempts, replayOf(l))
		if withError {
			fmt.Fprintf(tw, "\t%s", truncate(l.LastError, 60))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// leftAlone is a group of selected dead letters that a command did not
// change, and why.
type leftAlone struct {
	why  string
	rows []dlq.Letter
}

// printChange prints what `dlq purge` or `dlq replay` did to rows (would do,
// with dryRun): a head line such as "deleted 3 dead letters:" (none when rows
// is empty), the rows as a table, the ids of each non-empty group left alone,
// and a note when nothing was changed.
func printChange(w io.Writer, rows []dlq.Letter, dryRun bool, none, would, did string, left ...leftAlone) error {
	switch {
	case len(rows) == 0:
		fmt.Fprintln(w, none)
	case dryRun:
		fmt.Fprintf(w, "%s %s:\n", would, deadLetters(len(rows)))
	default:
		fmt.Fprintf(w, "%s %s:\n", did, deadLetters(len(rows)))
	}
	if len(rows) > 0 {
		if err := letterTable(w, rows, false); err != nil {
			return err
		}
	}
	for _, l := range left {
		if len(l.rows) > 0 {
			fmt.Fprintf(w, "%s: %s\n", l.why, dlq.JoinIDs(letterIDs(l.rows)))
		}
	}
	if dryRun {
		fmt.Fprintln(w, "dry run: nothing was changed")
	}
	return nil
}

func letterIDs(ls []dlq.Letter) []int64 {
	out := make([]int64, len(ls))
	for i, l := range ls {
		out[i] = l.ID
	}
	return out
}

// deadLetters says "1 dead letter" or "n dead letters".
func deadLetters(n int) string {
	if n == 1 {
		return "1 dead letter"
	}
	return fmt.Sprintf("%d dead letters", n)
}
