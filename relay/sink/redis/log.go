package redis

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	goredis "github.com/redis/go-redis/v9"
)

// go-redis logs connection trouble through a package-wide logger that writes
// plain text to stderr. The sink routes it to slog (as warnings of the sink
// created last), so the relay's output stays JSON.
var clientLogger atomic.Pointer[slog.Logger]

type slogLogging struct{}

func (slogLogging) Printf(_ context.Context, format string, v ...any) {
	if l := clientLogger.Load(); l != nil {
		l.Warn("redis client: " + fmt.Sprintf(format, v...))
	}
}

func routeClientLogs(logger *slog.Logger) {
	clientLogger.Store(logger)
	goredis.SetLogger(slogLogging{})
}
