package relay

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestStartReplicationError: a slot dropped between the relay's check and
// START_REPLICATION (found by TestTorture: the slot was dropped just after
// the relay had recreated it, and the relay stopped with "run `outbox
// migrate up`") ends only the session, whose successor recreates the slot;
// so does a publication dropped after connect made sure of it, and a slot
// still held by another walsender.
func TestStartReplicationError(t *testing.T) {
	for _, pe := range []*pgconn.PgError{
		{Severity: "ERROR", Code: "42704", Message: `replication slot "outbox_slot" does not exist`},
		{Severity: "ERROR", Code: "42704", Message: `publication "outbox_pub" does not exist`},
		{Severity: "ERROR", Code: "55006", Message: `replication slot "outbox_slot" is active for PID 42`},
	} {
		var fe *FatalError
		if err := startReplicationError(pe); errors.As(err, &fe) || !errors.Is(err, pe) {
			t.Errorf("%s: %v; want an error that ends the session only, wrapping the server's", pe.Message, err)
		}
	}
}
