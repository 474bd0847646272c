package sink

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pglogrepl"
)

// TestLSN: LSN prints as pglogrepl.LSN does, the form PostgreSQL uses.
func TestLSN(t *testing.T) {
	for _, v := range []uint64{0, 1, 0x16_B374D848, 1<<64 - 1} {
		if got, want := LSN(v).String(), pglogrepl.LSN(v).String(); got != want {
			t.Errorf("LSN(%#x) = %q, want %q", v, got, want)
		}
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("too large")
	for name, c := range map[string]struct {
		err  error
		want bool
	}{
		"plain":            {base, false},
		"nil":              {nil, false},
		"marked":           {MarkPermanent(base), true},
		"wrapped marked":   {fmt.Errorf("kafka: publish: %w", MarkPermanent(base)), true},
		"formatted":        {Permanentf("destination %q: %w", "x", base), true},
		"ErrPermanent too": {fmt.Errorf("x: %w", ErrPermanent), true},
	} {
		if got := Permanent(c.err); got != c.want {
			t.Errorf("%s: Permanent(%v) = %v, want %v", name, c.err, got, c.want)
		}
	}
	if MarkPermanent(nil) != nil {
		t.Error("MarkPermanent(nil) is not nil")
	}
	if err := MarkPermanent(base); !errors.Is(err, base) || err.Error() != base.Error() {
		t.Errorf("MarkPermanent(%v) = %v, want the same message, unwrapping to it", base, err)
	}
	errs := AllFailed(3, base)
	if len(errs) != 3 || errs[0] != base || errs[2] != base {
		t.Errorf("AllFailed(3) = %v", errs)
	}
}
