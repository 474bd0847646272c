package outboxcli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/sdk/history"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
	"github.com/outboxrelay/outbox/sdk/pgtime"
)

// eventView is one event as `outbox events` prints it.
type eventView struct {
	ID string `json:"id"`
	// CreatedAt and OccurredAt are in lossless text: RFC 3339 for the
	// years 0000-9999, "infinity", "-infinity", "+294276-12-31T..." beyond.
	CreatedAt     pgtime.Value      `json:"created_at"`
	OccurredAt    pgtime.Value      `json:"occurred_at"`
	EventType     string            `json:"event_type"`
	SchemaVersion string            `json:"schema_version"`
	DeliveredAt   *pgtime.Value     `json:"delivered_at"`
	ContentType   string            `json:"content_type"`
	TenantID      string            `json:"tenant_id,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	// Payload is the payload itself when it is JSON, else absent.
	Payload json.RawMessage `json:"payload,omitempty"`
	// PayloadBase64 is the payload when it is not JSON.
	PayloadBase64 []byte `json:"payload_base64,omitempty"`
}

// eventsPage is the --json output.
type eventsPage struct {
	AggregateType string      `json:"aggregate_type"`
	AggregateID   string      `json:"aggregate_id"`
	Events        []eventView `json:"events"`
	// Next is the --after value for the following page; empty on the last.
	Next string `json:"next,omitempty"`
}

// errEventsPageFull stops a history load once a page and one more event are read.
var errEventsPageFull = errors.New("page full")

func (a *app) eventsCmd() *cobra.Command {
	var t target
	var aggregate, after string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "events --aggregate TYPE:ID",
		Short: "List one aggregate's events in order (its history)",
		Long: "List the events of one aggregate in the order sdk/history folds them: (created_at, id), the start\n" +
			"order of the writing transactions (see docs/sdk.md, History). Only rows still in the events table are\n" +
			"shown: `outbox prune` and delivery.on_delivered: delete remove delivered ones.\n\n" +
			"TYPE:ID splits at the first colon, so an id may contain colons. Pages: --limit events at a time; the\n" +
			"last line (or \"next\" in --json) gives the --after value for the next page. Reads go through the\n" +
			"history index when it exists (history.CreateIndex), else PostgreSQL scans the events table.",
		Example: `  outbox events --aggregate order:42
  outbox events --aggregate order:42 --limit 50 --after 01964c2e-...
  outbox events --config relay.yaml --aggregate customer:c-7 --json | jq '.events[].event_type'`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			aggType, aggID, err := parseAggregate(aggregate)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usageErr("pass a positive number, or 0 for every event", "--limit %d: must not be negative", limit)
			}
			var afterID uuid.UUID
			if after != "" {
				if afterID, err = uuid.Parse(after); err != nil {
					return usageErr("pass the id of the last event shown (the \"next\" value of the previous page)", "--after %q is not an event id (a UUID)", after)
				}
			}
			r, err := t.resolve(c)
			if err != nil {
				return err
			}
			pool, err := openPool(c.Context(), r, "outbox events", "events")
			if err != nil {
				return err
			}
			defer pool.Close()
			// One REPEATABLE READ transaction: one consistent view across pages.
			tx, err := pool.BeginTx(c.Context(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
			if err != nil {
				return runtimeErr(err, "")
			}
			defer tx.Rollback(context.Background())
			page, err := loadEvents(c.Context(), tx, r.schema, aggType, aggID, afterID, after != "", limit)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(page)
			}
			return eventsTable(out, page)
		},
	}
	t.add(cmd, false)
	cmd.Flags().StringVar(&aggregate, "aggregate", "", "the aggregate, as TYPE:ID (e.g. order:42); required")
	cmd.Flags().IntVar(&limit, "limit", 100, "events per page; 0 for every event")
	cmd.Flags().StringVar(&after, "after", "", "start after this event id (the next value of the previous page)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object: the aggregate, its events (full payloads and headers), and next")
	return cmd
}

// parseAggregate splits TYPE:ID at the first colon.
func parseAggregate(s string) (aggType, aggID string, err error) {
	hint := "write --aggregate TYPE:ID, the aggregate_type and aggregate_id columns, e.g. --aggregate order:42"
	if s == "" {
		return "", "", usageErr(hint, "--aggregate is required")
	}
	aggType, aggID, ok := strings.Cut(s, ":")
	switch {
	case !ok:
		return "", "", usageErr(hint, "--aggregate %q has no colon between the type and the id", s)
	case aggType == "":
		return "", "", usageErr(hint, "--aggregate %q: the type before the colon is empty", s)
	case aggID == "":
		return "", "", usageErr(hint, "--aggregate %q: the id after the colon is empty", s)
	}
	return aggType, aggID, nil
}

// loadEvents reads up to limit events (every one when limit is 0) of the
// aggregate after the event afterID, with sdk/history, and their delivery
// times.
func loadEvents(ctx context.Context, tx pgx.Tx, schema, aggType, aggID string, afterID uuid.UUID, hasAfter bool, limit int) (eventsPage, error) {
	page := eventsPage{AggregateType: aggType, AggregateID: aggID, Events: []eventView{}}
	table := outboxschema.Quote(schema) + ".events"
	var cursor history.Cursor
	if hasAfter {
		err := tx.QueryRow(ctx, "SELECT seq FROM "+table+" WHERE id = $1 AND aggregate_type = $2 AND aggregate_id = $3",
			afterID, aggType, aggID).Scan(&cursor.Seq)
		if errors.Is(err, pgx.ErrNoRows) {
			return page, usageErr("pass an id printed for this aggregate (it may have been pruned since)",
				"--after %s: no such event of %s:%s in schema %s", afterID, aggType, aggID, schema)
		}
		if err != nil {
			return page, runtimeErr(fmt.Errorf("look up --after event: %w", err), "")
		}
	}
	pageSize := 500
	if limit > 0 {
		pageSize = min(limit+1, pageSize)
	}
	l, err := history.New(&history.Config{Schema: schema, PageSize: pageSize})
	if err != nil {
		return page, usageErr("", "%v", err)
	}
	var recs []history.Record
	err = l.Load(ctx, tx, aggType, aggID, cursor, func(r history.Record) error {
		recs = append(recs, r)
		if limit > 0 && len(recs) > limit {
			return errEventsPageFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEventsPageFull) {
		return page, runtimeErr(err, "")
	}
	if limit > 0 && len(recs) > limit {
		recs = recs[:limit]
		page.Next = recs[limit-1].ID.String()
	}
	if len(recs) == 0 {
		return page, nil
	}
	ids := make([]uuid.UUID, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	delivered := map[uuid.UUID]pgtime.Value{}
	rows, err := tx.Query(ctx, "SELECT id, delivered_at FROM "+table+" WHERE id = ANY($1) AND delivered_at IS NOT NULL", ids)
	if err != nil {
		return page, runtimeErr(fmt.Errorf("read delivery times: %w", err), "")
	}
	for rows.Next() {
		var id uuid.UUID
		var at pgtime.Value
		if err := rows.Scan(&id, &at); err != nil {
			rows.Close()
			return page, runtimeErr(fmt.Errorf("read delivery times: %w", err), "")
		}
		delivered[id] = at
	}
	if err := rows.Err(); err != nil {
		return page, runtimeErr(fmt.Errorf("read delivery times: %w", err), "")
	}
	for _, r := range recs {
		v := eventView{ID: r.ID.String(), CreatedAt: pgtime.Value{Time: r.CreatedAt, Inf: r.CreatedAtInf},
			OccurredAt: pgtime.Value{Time: r.OccurredAt, Inf: r.OccurredAtInf}, EventType: r.EventType,
			SchemaVersion: r.SchemaVersion, ContentType: r.ContentType, TenantID: r.TenantID, Headers: r.Headers}
		if at, ok := delivered[r.ID]; ok {
			v.DeliveredAt = &at
		}
		if eventPayloadIsJSON(r.ContentType, r.Payload) {
			v.Payload = r.Payload
		} else {
			v.PayloadBase64 = r.Payload
		}
		page.Events = append(page.Events, v)
	}
	return page, nil
}

func eventPayloadIsJSON(contentType string, payload []byte) bool {
	ct, _, _ := strings.Cut(contentType, ";")
	ct = strings.ToLower(strings.TrimSpace(ct))
	return (ct == "application/json" || strings.HasSuffix(ct, "+json")) && json.Valid(payload)
}

const payloadPreviewLen = 60

// payloadPreview is a one-line excerpt of a payload for the table.
func payloadPreview(v eventView) string {
	var s string
	switch {
	case v.Payload != nil:
		var b bytes.Buffer
		if err := json.Compact(&b, v.Payload); err != nil {
			s = string(v.Payload)
		} else {
			s = b.String()
		}
	case utf8.Valid(v.PayloadBase64) && !strings.ContainsAny(string(v.PayloadBase64), "\x00\r\n\t"):
		s = string(v.PayloadBase64)
	default:
		return fmt.Sprintf("<%d bytes %s>", len(v.PayloadBase64), v.ContentType)
	}
	if utf8.RuneCountInString(s) > payloadPreviewLen {
		r := []rune(s)
		s = string(r[:payloadPreviewLen-3]) + "..."
	}
	return escapeControls(s, false)
}

// tableTime formats a timestamp for the table: to the millisecond in UTC,
// or the lossless text when RFC 3339 cannot hold it.
func tableTime(v pgtime.Value) string {
	if !pgtime.RFC3339(v.Time, v.Inf) {
		return v.String()
	}
	return v.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func eventsTable(out io.Writer, page eventsPage) error {
	if len(page.Events) == 0 {
		_, err := fmt.Fprintf(out, "no events for %s:%s\n", page.AggregateType, page.AggregateID)
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED_AT\tEVENT_TYPE\tVERSION\tDELIVERED_AT\tPAYLOAD")
	for _, e := range page.Events {
		delivered := "-"
		if e.DeliveredAt != nil {
			delivered = tableTime(*e.DeliveredAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, tableTime(e.CreatedAt), escapeControls(e.EventType, false), escapeControls(e.SchemaVersion, false), delivered, payloadPreview(e))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		_, err := fmt.Fprintf(out, "(%d shown; next page: --after %s)\n", len(page.Events), page.Next)
		return err
	}
	return nil
}
