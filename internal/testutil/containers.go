package testutil

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Containers: where a Docker engine answers (users' machines, CI runners with
// Docker), a service that is neither configured nor running on localhost is
// started with testcontainers-go, once per test process; the testcontainers
// reaper removes it when the process ends. Without an engine the attempt
// fails within milliseconds and the test is skipped (or fails under
// OUTBOX_TEST_REQUIRE_SERVICES=1) with the command that starts the service.

type containerResult struct {
	url string
	err error
}

var (
	containersMu sync.Mutex
	containers   = map[string]*containerResult{}
)

// fromContainer returns the URL of service's container, starting it on the
// first call.
func fromContainer(service string) (string, error) {
	containersMu.Lock()
	defer containersMu.Unlock()
	if r, ok := containers[service]; ok {
		return r.url, r.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	url, err := startContainer(ctx, service)
	if err != nil {
		err = fmt.Errorf("testcontainers: %w", err)
	}
	containers[service] = &containerResult{url: url, err: err}
	return url, err
}

func startContainer(ctx context.Context, service string) (string, error) {
	switch service {
	case "postgres":
		c, err := postgres.Run(ctx, "postgres:16-alpine",
			postgres.WithDatabase("outbox"), postgres.WithUsername("postgres"), postgres.WithPassword("postgres"),
			testcontainers.WithCmdArgs("-c", "wal_level=logical", "-c", "max_replication_slots=64", "-c", "max_wal_senders=64", "-c", "fsync=off"),
			postgres.BasicWaitStrategies())
		if err != nil {
			return "", err
		}
		return c.ConnectionString(ctx, "sslmode=disable")
	case "nats":
		return generic(ctx, "nats:2.10", "4222/tcp", "nats", []string{"-js"}, wait.ForLog("Server is ready"))
	case "rabbitmq":
		u, err := generic(ctx, "rabbitmq:3.13", "5672/tcp", "", nil, wait.ForListeningPort("5672/tcp").WithStartupTimeout(2*time.Minute))
		if err != nil {
			return "", err
		}
		return "amqp://guest:guest@" + u + "/", nil
	case "redis":
		u, err := generic(ctx, "redis:7", "6379/tcp", "", nil, wait.ForListeningPort("6379/tcp"))
		if err != nil {
			return "", err
		}
		return "redis://" + u + "/0", nil
	}
	return "", fmt.Errorf("no container for %s", service)
}

func generic(ctx context.Context, image, port, proto string, cmd []string, w wait.Strategy) (string, error) {
	opts := []testcontainers.ContainerCustomizer{testcontainers.WithExposedPorts(port), testcontainers.WithWaitStrategy(w)}
	if cmd != nil {
		opts = append(opts, testcontainers.WithCmd(cmd...))
	}
	c, err := testcontainers.Run(ctx, image, opts...)
	if err != nil {
		return "", err
	}
	return c.PortEndpoint(ctx, port, proto)
}
