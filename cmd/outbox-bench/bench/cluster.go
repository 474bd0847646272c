package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// cluster is the benchmark's own throwaway PostgreSQL cluster: on its own port
// and directory, so that it can run with fsync on (durable numbers) without
// touching the cluster the tests share, and so that nothing else runs in it.
type cluster struct {
	dir  string
	port int
	bin  string
	url  string
}

func runOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// asPostgres runs a server program as the postgres OS user when we are root
// (initdb and postgres refuse to run as root).
func asPostgres(name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

// startCluster creates and starts a cluster in dir (created, must not exist
// or be empty) listening on 127.0.0.1:port.
func startCluster(ctx context.Context, dir string, port int, fsync bool) (*cluster, error) {
	bin, err := findPgBin()
	if err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("port %d is in use: pass --pg-port with a free port, or --database-url to use a running PostgreSQL", port)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres OS user for initdb: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		// every parent must be traversable by postgres
		for p := filepath.Dir(dir); p != "/" && p != "."; p = filepath.Dir(p) {
			if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o001 == 0 {
				os.Chmod(p, fi.Mode().Perm()|0o001)
			}
		}
	}
	c := &cluster{dir: dir, port: port, bin: bin,
		url: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/outbox_bench?sslmode=disable", port)}
	out, err := asPostgres(filepath.Join(bin, "initdb"), "-D", dir, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	onoff := map[bool]string{true: "on", false: "off"}[fsync]
	conf := fmt.Sprintf(`
# added by outbox-bench: a throwaway cluster for benchmarks
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
wal_level = logical
max_replication_slots = 32
max_wal_senders = 32
max_connections = 200
shared_buffers = 256MB
max_wal_size = 4GB
fsync = %s
full_page_writes = %s
synchronous_commit = on
wal_sender_timeout = 60s
log_min_messages = warning
`, port, dir, onoff, onoff)
	f, err := os.OpenFile(filepath.Join(dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		return nil, err
	}
	out, err = asPostgres(filepath.Join(bin, "pg_ctl"), "-D", dir, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_ctl start: %v: %s%s", err, out, log)
	}
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port))
	if err == nil {
		_, err = conn.Exec(ctx, "CREATE DATABASE outbox_bench")
		conn.Close(ctx)
	}
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("create database: %w", err)
	}
	return c, nil
}

// stop stops the cluster and removes its directory.
func (c *cluster) stop() error {
	out, err := asPostgres(filepath.Join(c.bin, "pg_ctl"), "-D", c.dir, "-m", "immediate", "-w", "stop").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "not running") {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return os.RemoveAll(c.dir)
}

// setFsync turns fsync and full_page_writes on or off in a running cluster:
// both are reloadable (SIGHUP), so no restart is needed.
func setFsync(ctx context.Context, conn *pgx.Conn, on bool) error {
	v := map[bool]string{true: "on", false: "off"}[on]
	for _, q := range []string{
		"ALTER SYSTEM SET fsync = " + v,
		"ALTER SYSTEM SET full_page_writes = " + v,
		"SELECT pg_reload_conf()",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	// the reload is asynchronous: wait until a new session sees it
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var got string
		if err := conn.QueryRow(ctx, "SELECT setting FROM pg_settings WHERE name = 'fsync'").Scan(&got); err == nil && got == v {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("fsync did not become %s after pg_reload_conf()", v)
}
