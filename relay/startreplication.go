package relay

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// startReplicationError explains a failed START_REPLICATION (pgoutput.Start
// names the step). None is fatal:
// the session ends and the next one starts again from its checks. A slot or
// publication missing here (SQLSTATE 42704) was dropped after those checks
// found it (the session recreated the slot, or connect the publication, a
// moment before): the next session finds it gone and recreates it, the slot
// with a snapshot. Stopping the relay instead would need a human for what the
// relay repairs by itself.
func startReplicationError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42704" { // undefined_object
		return fmt.Errorf("%w (the slot or the publication was dropped meanwhile; starting again recreates it)", err)
	}
	return err // 55006 object_in_use (the slot is active for another PID) among others
}
