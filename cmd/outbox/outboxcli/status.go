package outboxcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/dlq"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
	"github.com/outboxrelay/outbox/sdk/pgtime"
)

// statusReport is what `outbox status` shows; its JSON form is the --json output.
type statusReport struct {
	Schema      string        `json:"schema"`
	AsOf        time.Time     `json:"as_of"`
	Backlog     backlogStatus `json:"backlog"`
	Slot        slotStatus    `json:"slot"`
	Relay       relayStatus   `json:"relay"`
	DeadLetters dlqStatus     `json:"dead_letters"`
}

type backlogStatus struct {
	// Undelivered counts rows not yet marked delivered.
	Undelivered int64 `json:"undelivered"`
	// OldestCreatedAt is the oldest finite created_at among undelivered rows
	// (as the outbox_backlog_oldest_age_seconds metric: a hand-written
	// 'infinity' has no age), in pgtime's lossless text for any year.
	OldestCreatedAt  *pgtime.Value `json:"oldest_created_at"`
	OldestAgeSeconds *float64      `json:"oldest_age_seconds"`
}

type slotStatus struct {
	Name              string `json:"name"`
	Exists            bool   `json:"exists"`
	Active            bool   `json:"active"`
	ActivePID         *int32 `json:"active_pid"`
	LagBytes          *int64 `json:"lag_bytes"`
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn,omitempty"`
	WALStatus         string `json:"wal_status,omitempty"`
}

type relayStatus struct {
	// Active is true when a relay streams from the slot.
	Active bool `json:"active"`
	// Holder is the relay that last became active (host, pid, version).
	Holder      string     `json:"holder"`
	HolderSince *time.Time `json:"holder_since"`
}

type dlqStatus struct {
	Total    int64            `json:"total"`
	ByStatus map[string]int64 `json:"by_replay_status"`
	ByRoute  []routeDLQ       `json:"by_route"`
}

type routeDLQ struct {
	Route    string           `json:"route"`
	Total    int64            `json:"total"`
	ByStatus map[string]int64 `json:"by_replay_status"`
}

func (a *app) statusCmd() *cobra.Command {
	var t target
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the backlog, the slot and its lag, the active relay and the dead letters",
		Example: `  outbox status --config relay.yaml
  outbox status --database-url "$DATABASE_URL" --schema outbox --slot outbox_relay --json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			r, err := t.resolve(c)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), time.Minute)
			defer cancel()
			pool, err := openPool(ctx, r, "outbox status", "events", "dead_letters", "relay_state")
			if err != nil {
				return err
			}
			defer pool.Close()
			rep, err := readStatus(ctx, pool, r)
			if err != nil {
				return dbError(err, "")
			}
			if asJSON {
				return json.NewEncoder(c.OutOrStdout()).Encode(rep)
			}
			return printStatus(c.OutOrStdout(), rep)
		},
	}
	t.add(cmd, true)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// maxAgeSeconds caps an age shown as a time.Duration (which ends at ~292 years).
const maxAgeSeconds = 285 * 365 * 24 * 3600

func readStatus(ctx context.Context, pool *pgxpool.Pool, r resolved) (*statusReport, error) {
	now, err := serverNow(ctx, pool)
	if err != nil {
		return nil, fmt.Errorf("read the clock: %w", err)
	}
	rep := &statusReport{Schema: r.schema, AsOf: now.UTC(), Slot: slotStatus{Name: r.slot}}
	schema := outboxschema.Quote(r.schema)

	b := &rep.Backlog
	var oldest pgtype.Timestamptz
	err = pool.QueryRow(ctx, `SELECT count(*), min(created_at) FILTER (WHERE isfinite(created_at)) FROM `+schema+`.events WHERE delivered_at IS NULL`).Scan(&b.Undelivered, &oldest)
	if err != nil {
		return nil, fmt.Errorf("read the backlog: %w", err)
	}
	if oldest.Valid {
		t, inf := pgtime.FromPG(oldest)
		b.OldestCreatedAt = &pgtime.Value{Time: t, Inf: inf}
		// In seconds from Unix times: time.Time.Sub saturates at ~292 years.
		age := max(float64(now.Unix()-t.Unix())+float64(now.Nanosecond()-t.Nanosecond())/1e9, 0)
		b.OldestAgeSeconds = &age
	}

	s := &rep.Slot
	err = pool.QueryRow(ctx, `SELECT active, active_pid,
	    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END - confirmed_flush_lsn)::bigint,
	    coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, '')
	  FROM pg_replication_slots WHERE slot_name = $1`, r.slot).Scan(&s.Active, &s.ActivePID, &s.LagBytes, &s.ConfirmedFlushLSN, &s.WALStatus)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("read the replication slot: %w", err)
	default:
		s.Exists = true
	}
	rep.Relay.Active = s.Active

	var holder *string
	err = pool.QueryRow(ctx, `SELECT holder, holder_since FROM `+schema+`.relay_state WHERE slot = $1`, r.slot).Scan(&holder, &rep.Relay.HolderSince)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("read the relay state: %w", err)
	}
	if holder != nil {
		rep.Relay.Holder = *holder
	}
	if hs := rep.Relay.HolderSince; hs != nil {
		u := hs.UTC()
		rep.Relay.HolderSince = &u
	}

	store, err := dlq.New(pool, r.schema)
	if err != nil {
		return nil, err
	}
	counts, err := store.Counts(ctx)
	if err != nil {
		return nil, err
	}
	d := &rep.DeadLetters
	d.ByStatus = zeroStatuses()
	d.ByRoute = []routeDLQ{}
	for _, rc := range counts {
		if n := len(d.ByRoute); n == 0 || d.ByRoute[n-1].Route != rc.Route {
			d.ByRoute = append(d.ByRoute, routeDLQ{Route: rc.Route, ByStatus: zeroStatuses()})
		}
		rt := &d.ByRoute[len(d.ByRoute)-1]
		rt.Total += rc.Count
		rt.ByStatus[string(rc.Status)] += rc.Count
		d.Total += rc.Count
		d.ByStatus[string(rc.Status)] += rc.Count
	}
	return rep, nil
}

func zeroStatuses() map[string]int64 {
	m := map[string]int64{}
	for _, s := range dlq.Statuses {
		m[string(s)] = 0
	}
	return m
}

func printStatus(w io.Writer, rep *statusReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "schema\t%s\n", rep.Schema)

	b := rep.Backlog
	backlog := fmt.Sprintf("%d undelivered", b.Undelivered)
	if b.OldestCreatedAt != nil {
		backlog += fmt.Sprintf(", oldest %s old (created %s)", fmtAge(time.Duration(min(*b.OldestAgeSeconds, maxAgeSeconds)*float64(time.Second))), b.OldestCreatedAt)
	}
	fmt.Fprintf(tw, "backlog\t%s\n", backlog)

	s := rep.Slot
	var slot string
	switch {
	case !s.Exists:
		slot = fmt.Sprintf("%s does not exist (no relay has started yet, or it was dropped: the next relay to start creates it)", s.Name)
	case s.Active:
		slot = fmt.Sprintf("%s, active (pid %d)", s.Name, *s.ActivePID)
	default:
		slot = fmt.Sprintf("%s, inactive (no relay is streaming from it; it keeps WAL meanwhile)", s.Name)
	}
	fmt.Fprintf(tw, "slot\t%s\n", slot)
	if s.Exists {
		lag := "unknown"
		if s.LagBytes != nil {
			lag = fmt.Sprintf("%s (%d bytes)", fmtBytes(*s.LagBytes), *s.LagBytes)
		}
		fmt.Fprintf(tw, "slot lag\t%s behind the server, confirmed up to %s\n", lag, s.ConfirmedFlushLSN)
	}

	relay := "none"
	switch {
	case rep.Relay.Active && rep.Relay.Holder != "":
		relay = fmt.Sprintf("%s, since %s", rep.Relay.Holder, fmtTimePtr(rep.Relay.HolderSince))
	case rep.Relay.Active:
		relay = "active (not recorded)"
	case rep.Relay.Holder != "":
		relay = fmt.Sprintf("none (the last was %s, from %s)", rep.Relay.Holder, fmtTimePtr(rep.Relay.HolderSince))
	}
	fmt.Fprintf(tw, "active relay\t%s\n", relay)

	d := rep.DeadLetters
	dl := fmt.Sprintf("%d", d.Total)
	if d.ByStatus[string(dlq.StatusNone)] != d.Total {
		dl += fmt.Sprintf(" (%d never replayed)", d.ByStatus[string(dlq.StatusNone)])
	}
	fmt.Fprintf(tw, "dead letters\t%s\n", dl)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.ByRoute) == 0 {
		return nil
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "  ROUTE\tTOTAL")
	for _, st := range dlq.Statuses {
		fmt.Fprintf(tw, "\t%s", strings.ToUpper(string(st)))
	}
	fmt.Fprintln(tw)
	for _, rt := range d.ByRoute {
		fmt.Fprintf(tw, "  %s\t%d", rt.Route, rt.Total)
		for _, st := range dlq.Statuses {
			fmt.Fprintf(tw, "\t%d", rt.ByStatus[string(st)])
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// fmtAge formats a duration for people: 42s, 3m12s, 5h3m, 3d4h.
func fmtAge(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String()
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// fmtBytes formats a byte count with IEC units.
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
