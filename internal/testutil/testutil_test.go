package testutil

import (
	"os"
	"testing"
	"time"
)

// TestContainerFallbackFailsFast checks that, without a Docker engine, the
// testcontainers fallback gives an error quickly instead of hanging (with an
// engine it starts Redis, which is fine too).
func TestContainerFallbackFailsFast(t *testing.T) {
	if os.Getenv("DOCKER_HOST") != "" {
		t.Skip("DOCKER_HOST is set: a real engine may be there")
	}
	start := time.Now()
	u, err := fromContainer("redis")
	t.Logf("fromContainer(redis) = %q, %v after %s", u, err, time.Since(start))
	if err == nil && u == "" {
		t.Fatal("no error and no URL")
	}
	if time.Since(start) > 2*time.Minute {
		t.Fatal("the container fallback took minutes")
	}
}
