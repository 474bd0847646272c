package redis

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/sinktest"
	"github.com/outboxrelay/outbox/sdk/inbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newSink(t testing.TB, cfg Config) *Sink {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = testutil.RedisURL(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// privateURLs maps streams on test-owned servers to their URLs.
var privateURLs sync.Map

func urlOf(t testing.TB, stream string) string {
	if u, ok := privateURLs.Load(stream); ok {
		return u.(string)
	}
	return testutil.RedisURL(t)
}

func admin(t testing.TB, rawURL string) *goredis.Client {
	t.Helper()
	opts, err := goredis.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// newStream returns a stream name on the shared server, deleted when the
// test ends.
func newStream(t testing.TB) string {
	t.Helper()
	stream := testutil.RandomName("outbox-test:")
	c := admin(t, testutil.RedisURL(t))
	t.Cleanup(func() { c.Del(context.Background(), stream) })
	return stream
}

// consume reads the stream with XRANGE until it has at least min entries or
// ctx is done.
func consume(ctx context.Context, t *testing.T, stream string, min int) []sinktest.Received {
	t.Helper()
	c := admin(t, urlOf(t, stream))
	for {
		entries, err := c.XRange(ctx, stream, "-", "+").Result()
		if err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
		if len(entries) >= min || ctx.Err() != nil {
			got := make([]sinktest.Received, len(entries))
			for i, e := range entries {
				got[i] = received(t, e)
			}
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func received(t *testing.T, e goredis.XMessage) sinktest.Received {
	got := sinktest.Received{Attributes: map[string]string{}, Headers: map[string]string{}}
	for k, v := range e.Values {
		s, _ := v.(string)
		switch k {
		case "datacontenttype":
			got.ContentType = s
		case "payload":
			got.Payload = []byte(s)
		case "headers":
			if err := json.Unmarshal([]byte(s), &got.Headers); err != nil {
				t.Errorf("entry %s: headers field: %v", e.ID, err)
			}
		default:
			got.Attributes[k] = s
		}
	}
	got.ID = got.Attributes["id"]
	got.Inbox, got.InboxErr = inbox.FromRedis(e.Values)
	return got
}

func TestContract(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{
		New:         func(t *testing.T) sink.Sink { return newSink(t, Config{}) },
		Destination: func(t *testing.T) string { return newStream(t) },
		Consume:     consume,
		SDKReader:   true,
		Permanent: []sinktest.PermanentCase{
			{Name: "WrongType", Break: func(t *testing.T, m *sink.Message) {
				key := newStream(t)
				if err := admin(t, testutil.RedisURL(t)).Set(context.Background(), key, "not a stream", 0).Err(); err != nil {
					t.Fatal(err)
				}
				m.Destination = key
			}},
		},
		Outage: outage,
	})
}

// server is a private redis-server a test can stop and start again on the
// same port; it keeps its data across restarts (append-only file, fsync
// always).
type server struct {
	t    testing.TB
	port int
	dir  string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

func startServer(t testing.TB, args ...string) *server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("OUTBOX_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal("redis-server not on PATH (apt-get install redis-server)")
		}
		t.Skip("redis-server not on PATH (apt-get install redis-server)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &server{t: t, port: port, dir: t.TempDir()}
	s.args = append([]string{bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always",
	}, args...)
	for i, a := range s.args {
		if a == "--tls-port" { // TLS only: the TLS port is ours, the plain one off
			s.args[2], s.args[i+1] = "0", strconv.Itoa(port)
		}
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", s.port) }

func (s *server) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on port %d did not start: %v", s.port, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop shuts the server down (SIGTERM: it finishes writing its AOF).
func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(os.Interrupt)
	s.cmd.Wait()
	s.cmd = nil
}

func outage(t *testing.T) sinktest.Outage {
	srv := startServer(t)
	stream := testutil.RandomName("outbox-outage:")
	privateURLs.Store(stream, srv.url())
	return sinktest.Outage{
		Sink:        newSink(t, Config{URL: srv.url(), DialTimeout: time.Second}),
		Destination: stream,
		Cut:         srv.stop,
		Restore:     srv.start,
	}
}

func TestACL(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	ctx := context.Background()
	if err := admin(t, srv.url()).Do(ctx, "ACL", "SETUSER", "writer", "on", ">writer-secret", "~allowed:*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(srv.url())
	u.User = url.UserPassword("writer", "wrong-secret")
	_, err := New(ctx, Config{URL: u.String()}, nil)
	if err == nil || strings.Contains(err.Error(), "wrong-secret") {
		t.Fatalf("New with a wrong password: got %v, want an error without the password", err)
	}
	t.Log(err)

	u.User = url.UserPassword("writer", "writer-secret")
	s := newSink(t, Config{URL: u.String()})
	defer s.Close()
	msgs := []*sink.Message{
		sinktest.NewMessage("allowed:orders", "a", 0),
		sinktest.NewMessage("denied:orders", "b", 0),
	}
	errs := s.Publish(ctx, msgs)
	if len(errs) != 2 || errs[0] != nil || !sink.Permanent(errs[1]) {
		t.Fatalf("Publish = %v, want the allowed stream to work and NOPERM to be permanent", errs)
	}
	t.Log(errs[1])
}

func TestMaxLenAndNoMkStream(t *testing.T) {
	t.Parallel()
	stream := newStream(t)
	s := newSink(t, Config{MaxLen: 10})
	defer s.Close()
	for seq := range 20 {
		sinktest.Publish(t, s, sinktest.Batch(stream, sinktest.Keys("maxlen", 50), seq))
	}
	n, err := admin(t, testutil.RedisURL(t)).XLen(context.Background(), stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n >= 1000 || n < 10 {
		t.Fatalf("stream holds %d entries after 1000 XADDs with MAXLEN ~ 10", n)
	}

	strict := newSink(t, Config{NoMkStream: true})
	defer strict.Close()
	missing := newStream(t)
	errs := strict.Publish(context.Background(), []*sink.Message{
		sinktest.NewMessage(stream, "a", 0),
		sinktest.NewMessage(missing, "b", 0),
	})
	if len(errs) != 2 || errs[0] != nil || !sink.Permanent(errs[1]) {
		t.Fatalf("Publish = %v, want an existing stream to work and a missing one to fail permanently", errs)
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	s := newSink(t, Config{MaxMessageBytes: 1000})
	defer s.Close()
	stream := newStream(t)
	msgs := sinktest.Batch(stream, sinktest.Keys("large", 2), 0)
	msgs[0].Event.Payload = make([]byte, 1001)
	errs := s.Publish(context.Background(), msgs)
	if len(errs) != 2 || !sink.Permanent(errs[0]) || errs[1] != nil {
		t.Fatalf("Publish = %v, want a permanent error for the large message only", errs)
	}
}

func TestConfigAndSecrets(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no url", Config{}, "url:"},
		{"scheme", Config{URL: "http://u:hunter2@h/"}, "scheme"},
		{"bad port", Config{URL: "redis://u:hunter2@h:99x/"}, "url:"},
		{"bad escape", Config{URL: "redis://u:hunter2%zz@h/"}, "url:"},
		{"bad db", Config{URL: "redis://u:hunter2@h:6379/x"}, "url "},
		{"tls without rediss", Config{URL: "redis://u:hunter2@h/", TLS: TLS{CAFile: "ca.pem"}}, "tls:"},
		{"tls ca", Config{URL: "rediss://u:hunter2@h/", TLS: TLS{CAFile: "/nonexistent/ca.pem"}}, "tls.ca_file:"},
		{"max_len", Config{URL: "redis://h/", MaxLen: -1}, "max_len:"},
	} {
		_, err := New(context.Background(), tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.name, err, tc.want)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error shows the password: %v", tc.name, err)
		}
	}
}

// TestTLS runs a private redis-server with TLS only and a self-signed
// certificate.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "outbox test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)

	srv := startServer(t, "--tls-port", "", "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", certFile, "--tls-auth-clients", "no")
	u := fmt.Sprintf("rediss://127.0.0.1:%d/0", srv.port)
	s := newSink(t, Config{URL: u, TLS: TLS{CAFile: certFile}})
	defer s.Close()
	sinktest.Publish(t, s, sinktest.Batch("tls:orders", sinktest.Keys("tls", 3), 0))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if s2, err := New(ctx, Config{URL: u}, nil); err == nil {
		s2.Close()
		t.Fatal("connected to a self-signed server without its CA")
	} else {
		t.Log(err)
	}
}

// TestLogAttributes: every line names the configured sink as "sink" (the
// relay passes logger.With("sink", name)) and the kind as "type".
func TestLogAttributes(t *testing.T) {
	logger, logs := sinktest.NewLogs("orders-redis")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, Config{URL: testutil.RedisURL(t)}, logger)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	logs.Check(t, "orders-redis", "redis")
}
