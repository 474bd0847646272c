package dlq

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outboxrelay/outbox/sdk/outboxschema"
	"github.com/outboxrelay/outbox/sdk/pgtime"
)

// Status is a dead letter's replay status.
type Status string

// Replay statuses, in the order a replay goes through them (defined with the
// table, in sdk/outboxschema).
const (
	StatusNone       Status = outboxschema.ReplayNone       // never replayed
	StatusRequested  Status = outboxschema.ReplayRequested  // an operator asked for a replay
	StatusDelivering Status = outboxschema.ReplayDelivering // the active relay is sending it
	StatusReplayed   Status = outboxschema.ReplayReplayed   // delivered again
	StatusFailed     Status = outboxschema.ReplayFailed     // the replay failed too
)

// Statuses lists every replay status.
var Statuses = []Status{StatusNone, StatusRequested, StatusDelivering, StatusReplayed, StatusFailed}

// Valid reports whether s is a known replay status.
func (s Status) Valid() bool { return slices.Contains(Statuses, s) }

// InProgress reports whether a replay is working on the row.
func (s Status) InProgress() bool { return s == StatusRequested || s == StatusDelivering }

// Finished reports whether a replay of the row has come to an end.
func (s Status) Finished() bool { return s == StatusReplayed || s == StatusFailed }

func statusNames() []string {
	out := make([]string, len(Statuses))
	for i, s := range Statuses {
		out[i] = string(s)
	}
	return out
}

// Letter is one dead letter: a copy of the event's envelope, the route that
// failed, and what happened to it.
type Letter struct {
	ID            int64     `json:"id"`
	EventID       uuid.UUID `json:"event_id"`
	AggregateType string    `json:"aggregate_type"`
	AggregateID   string    `json:"aggregate_id"`
	EventType     string    `json:"event_type"`
	SchemaVersion string    `json:"schema_version"`
	// Payload is the exact bytes the application wrote. List leaves it nil.
	Payload     []byte `json:"-"`
	ContentType string `json:"content_type"`
	// Headers are the event's headers. List leaves them nil.
	Headers  map[string]string `json:"headers,omitempty"`
	TenantID string            `json:"tenant_id,omitempty"`
	// OccurredAt and CreatedAt are the event's, as its row held them: any
	// year, or 'infinity'.
	OccurredAt Time `json:"occurred_at"`
	CreatedAt  Time `json:"created_at"`

	Route       string `json:"route"`
	Sink        string `json:"sink"`
	Destination string `json:"destination"`
	Attempts    int    `json:"attempts"`
	LastError   string `json:"last_error"`
	// Errors are the errors of the last attempts, oldest first, each as the
	// relay wrote it (a timestamp and the message). List leaves them nil.
	Errors        []string  `json:"errors,omitempty"`
	FirstFailedAt time.Time `json:"first_failed_at"`
	LastFailedAt  time.Time `json:"last_failed_at"`

	ReplayStatus      Status     `json:"replay_status"`
	ReplayRequestedAt *time.Time `json:"replay_requested_at"`
	ReplayedAt        *time.Time `json:"replayed_at"`
	ReplayCount       int        `json:"replay_count"`
}

// Time is a timestamptz of the event a dead letter copies: a time of any
// year PostgreSQL stores (4713 BC to 294276), in UTC, or 'infinity' /
// '-infinity' (Inf, with the zero Time). Its text and JSON form is lossless:
// RFC 3339 for the years 0000-9999, "infinity" and "-infinity", and ISO
// 8601's expanded form beyond ("+294276-12-31T23:59:59.999999Z").
type Time struct {
	Time time.Time
	Inf  pgtype.InfinityModifier
}

// String returns the lossless text.
func (t Time) String() string { return pgtime.Format(t.Time, t.Inf) }

// MarshalJSON writes the lossless text as a JSON string.
func (t Time) MarshalJSON() ([]byte, error) { return pgtime.Value(t).MarshalJSON() }

// UnmarshalJSON reads what MarshalJSON writes.
func (t *Time) UnmarshalJSON(b []byte) error { return (*pgtime.Value)(t).UnmarshalJSON(b) }

// ScanTimestamptz implements pgtype.TimestamptzScanner, for pgx.
func (t *Time) ScanTimestamptz(v pgtype.Timestamptz) error {
	t.Time, t.Inf = pgtime.FromPG(v)
	return nil
}

// TimestamptzValue implements pgtype.TimestamptzValuer, for pgx.
func (t Time) TimestamptzValue() (pgtype.Timestamptz, error) { return pgtime.ToPG(t.Time, t.Inf), nil }

// DB is what a Store needs from PostgreSQL: a *pgxpool.Pool, a *pgx.Conn or a
// pgx.Tx.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Store reads and changes the dead letters of one outbox schema.
type Store struct {
	db    DB
	table string
}

// New returns a Store over the dead-letter table of schema (defaults to
// "outbox").
func New(db DB, schema string) (*Store, error) {
	if db == nil {
		return nil, errors.New("dlq: nil DB")
	}
	if schema == "" {
		schema = "outbox"
	}
	if err := outboxschema.ValidateName("schema", schema); err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	return &Store{db: db, table: outboxschema.Quote(schema) + ".dead_letters"}, nil
}

// NotFoundError lists dead-letter ids that do not exist.
type NotFoundError struct{ IDs []int64 }

func (e *NotFoundError) Error() string {
	if len(e.IDs) == 1 {
		return fmt.Sprintf("no dead letter with id %d", e.IDs[0])
	}
	return fmt.Sprintf("no dead letters with ids %s", JoinIDs(e.IDs))
}

// ErrNotFound matches every *NotFoundError.
var ErrNotFound = errors.New("dead letter not found")

// Is reports NotFoundError as ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// JoinIDs formats ids as "1, 2, 3".
func JoinIDs(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ", ")
}

// summaryCols are the columns scanSummary reads: the dead_letters table's
// (outboxschema.DeadLetterColumns) without the payload, headers and error
// history that List leaves out (and event_seq, the relay's replay order); fullCols adds those three at the end, for
// Get.
var summaryCols, fullCols = letterColumns()

func letterColumns() (summary, full string) {
	var cols []string
	for _, c := range outboxschema.ColumnNames(outboxschema.DeadLetterColumns) {
		switch c {
		case "payload", "headers", "errors", outboxschema.DeadLetterEventSeq:
			continue
		case "tenant_id":
			c = "coalesce(tenant_id, '')"
		}
		cols = append(cols, c)
	}
	summary = strings.Join(cols, ", ")
	return summary, summary + ", payload, headers, errors"
}

// scanSummary reads a row of summaryCols into l, and the columns after them
// into extra.
func scanSummary(row pgx.Row, l *Letter, extra ...any) error {
	var status string
	dest := []any{&l.ID, &l.EventID, &l.AggregateType, &l.AggregateID, &l.EventType, &l.SchemaVersion, &l.ContentType,
		&l.TenantID, &l.OccurredAt, &l.CreatedAt, &l.Route, &l.Sink, &l.Destination, &l.Attempts, &l.LastError,
		&l.FirstFailedAt, &l.LastFailedAt, &status, &l.ReplayRequestedAt, &l.ReplayedAt, &l.ReplayCount}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return err
	}
	l.ReplayStatus = Status(status)
	l.FirstFailedAt, l.LastFailedAt = l.FirstFailedAt.UTC(), l.LastFailedAt.UTC()
	for _, t := range []**time.Time{&l.ReplayRequestedAt, &l.ReplayedAt} {
		if *t != nil {
			u := (*t).UTC()
			*t = &u
		}
	}
	return nil
}

func sortByID(ls []Letter) {
	slices.SortFunc(ls, func(a, b Letter) int { return cmp.Compare(a.ID, b.ID) })
}

func collectSummaries(rows pgx.Rows) ([]Letter, error) {
	defer rows.Close()
	var out []Letter
	for rows.Next() {
		var l Letter
		if err := scanSummary(rows, &l); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// List returns the dead letters f selects, lowest id first, without payloads,
// headers and error histories (Get has them). When f selects by ids and one
// does not exist, it returns a *NotFoundError naming the missing ones.
func (s *Store) List(ctx context.Context, f Filter) ([]Letter, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if err := s.checkIDs(ctx, s.db, f.IDs); err != nil {
		return nil, err
	}
	where, args := f.where()
	q := `SELECT ` + summaryCols + ` FROM ` + s.table + ` WHERE ` + where + ` ORDER BY id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("dlq: list: %w", err)
	}
	out, err := collectSummaries(rows)
	if err != nil {
		return nil, fmt.Errorf("dlq: list: %w", err)
	}
	return out, nil
}

// Get returns one dead letter in full, or a *NotFoundError.
func (s *Store) Get(ctx context.Context, id int64) (*Letter, error) {
	var l Letter
	var headers map[string]any
	var errs []json.RawMessage
	row := s.db.QueryRow(ctx, `SELECT `+fullCols+` FROM `+s.table+` WHERE id = $1`, id)
	if err := scanSummary(row, &l, &l.Payload, &headers, &errs); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, &NotFoundError{IDs: []int64{id}}
		}
		return nil, fmt.Errorf("dlq: get %d: %w", id, err)
	}
	if len(headers) > 0 {
		l.Headers = make(map[string]string, len(headers))
		for k, v := range headers {
			if s, ok := v.(string); ok {
				l.Headers[k] = s
			} else {
				b, _ := json.Marshal(v) // not written by the SDK: keep it as JSON
				l.Headers[k] = string(b)
			}
		}
	}
	for _, e := range errs {
		var s string
		if json.Unmarshal(e, &s) != nil {
			s = string(e) // not written by this relay: keep it as JSON
		}
		l.Errors = append(l.Errors, s)
	}
	return &l, nil
}

// missingIDs returns the ids of want that do not exist.
func missingIDs(ctx context.Context, db DB, table string, want []int64) ([]int64, error) {
	rows, err := db.Query(ctx, `SELECT w FROM unnest($1::bigint[]) AS w WHERE NOT EXISTS (SELECT 1 FROM `+table+` WHERE id = w) ORDER BY w`, want)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// RouteCount is the number of dead letters of one route in one replay status.
type RouteCount struct {
	Route  string `json:"route"`
	Status Status `json:"replay_status"`
	Count  int64  `json:"count"`
}

// Counts returns the number of dead letters per route and replay status,
// ordered by route and status.
func (s *Store) Counts(ctx context.Context) ([]RouteCount, error) {
	rows, err := s.db.Query(ctx, `SELECT route, replay_status, count(*) FROM `+s.table+` GROUP BY 1, 2 ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("dlq: count: %w", err)
	}
	var out []RouteCount
	var c RouteCount
	var status string
	_, err = pgx.ForEachRow(rows, []any{&c.Route, &status, &c.Count}, func() error {
		c.Status = Status(status)
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dlq: count: %w", err)
	}
	return out, nil
}
