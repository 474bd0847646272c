package outboxcli

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/dlq"
)

// letterJSON is a dead letter with its payload readable: as JSON when it is
// JSON, else base64.
type letterJSON struct {
	dlq.Letter
	Errors        []string        `json:"errors"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 []byte          `json:"payload_base64,omitempty"`
}

func (a *app) dlqShowCmd() *cobra.Command {
	var t target
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one dead letter: its envelope, payload and every attempt's error",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				if _, uerr := uuid.Parse(args[0]); uerr == nil {
					return usageErr(fmt.Sprintf("find the dead letters of that event with `outbox dlq list --event-id %s`", args[0]),
						"%q is an event id; `outbox dlq show` takes a dead letter's id (the ID column of `outbox dlq list`)", args[0])
				}
				return usageErr("the ID column of `outbox dlq list` has the ids", "bad dead-letter id %q: want a positive integer", args[0])
			}
			store, pool, err := openDLQ(c, &t)
			if err != nil {
				return err
			}
			defer pool.Close()
			l, err := store.Get(c.Context(), id)
			if err != nil {
				return dlqError(err, false)
			}
			if asJSON {
				v := letterJSON{Letter: *l, Errors: l.Errors}
				if v.Errors == nil {
					v.Errors = []string{}
				}
				if isJSON(l.ContentType, l.Payload) {
					v.Payload = l.Payload
				} else {
					v.PayloadBase64 = l.Payload
				}
				return json.NewEncoder(c.OutOrStdout()).Encode(v)
			}
			return showLetter(c.OutOrStdout(), l)
		},
	}
	t.add(cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (the payload as JSON when it is JSON, else as payload_base64)")
	return cmd
}

func isJSON(contentType string, b []byte) bool {
	ct := strings.ToLower(contentType)
	return (ct == "" || strings.Contains(ct, "json")) && json.Valid(b)
}

func showLetter(w io.Writer, l *dlq.Letter) error {
	fmt.Fprintf(w, "Dead letter %d\n", l.ID)
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	tenant := l.TenantID
	if tenant == "" {
		tenant = "-"
	}
	for _, kv := range [][2]string{
		{"event id", l.EventID.String()},
		{"event type", l.EventType},
		{"aggregate", aggregateOf(l)},
		{"schema version", l.SchemaVersion},
		{"tenant", tenant},
		{"occurred at", l.OccurredAt.String()},
		{"created at", l.CreatedAt.String()},
		{"route", l.Route},
		{"sink", l.Sink},
		{"destination", l.Destination},
		{"attempts", strconv.Itoa(l.Attempts)},
		{"first failed at", fmtTime(l.FirstFailedAt)},
		{"last failed at", fmtTime(l.LastFailedAt)},
		{"replay", fmt.Sprintf("%s (count %d, requested %s, replayed %s)", l.ReplayStatus, l.ReplayCount, fmtTimePtr(l.ReplayRequestedAt), fmtTimePtr(l.ReplayedAt))},
	} {
		fmt.Fprintf(tw, "  %s:\t%s\n", kv[0], escapeControls(kv[1], false))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "Headers:")
	if len(l.Headers) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, k := range slices.Sorted(maps.Keys(l.Headers)) {
		fmt.Fprintf(w, "  %s: %s\n", escapeControls(k, false), escapeControls(l.Headers[k], false))
	}
	fmt.Fprintf(w, "Payload (%s, %d bytes):\n", escapeControls(l.ContentType, false), len(l.Payload))
	fmt.Fprint(w, indent(payloadText(l.ContentType, l.Payload), "  "))
	fmt.Fprintln(w, "Errors, oldest first:")
	if len(l.Errors) == 0 {
		fmt.Fprintln(w, "  (none recorded)")
	}
	for _, e := range l.Errors {
		fmt.Fprintf(w, "  %s\n", escapeControls(e, false))
	}
	fmt.Fprintln(w, "Last error:")
	fmt.Fprintf(w, "  %s\n", escapeControls(l.LastError, false))
	return nil
}

// payloadText renders a payload for people: JSON indented, text as it is,
// anything else as a hex dump; in JSON and text, line feeds break lines and
// every other control character is escaped (escapeControls). Text is valid
// UTF-8 with graphic characters and white space only: an ESC, say, makes a
// payload binary.
func payloadText(contentType string, b []byte) string {
	if len(b) == 0 {
		return "(empty)\n"
	}
	if isJSON(contentType, b) {
		var buf bytes.Buffer
		if json.Indent(&buf, b, "", "  ") == nil {
			return escapeControls(buf.String(), true) + "\n"
		}
	}
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return !unicode.IsGraphic(r) && !unicode.IsSpace(r) }) {
		s := escapeControls(string(b), true)
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		return s
	}
	return hex.Dump(b)
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}
