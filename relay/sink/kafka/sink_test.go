package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.yaml.in/yaml/v3"

	"github.com/outboxrelay/outbox/internal/testutil"
	"github.com/outboxrelay/outbox/internal/tlsconf"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink"
	"github.com/outboxrelay/outbox/relay/sink/sinktest"
)

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no brokers", Config{}, "brokers:"},
		{"url as broker", Config{Brokers: []string{"kafka://h:9092"}}, "brokers[0]:"},
		{"acks", Config{Brokers: []string{"h:9092"}, RequiredAcks: "most"}, "required_acks:"},
		{"compression", Config{Brokers: []string{"h:9092"}, Compression: "brotli"}, "compression:"},
		{"partitioner", Config{Brokers: []string{"h:9092"}, Partitioner: "random"}, "partitioner:"},
		{"max bytes", Config{Brokers: []string{"h:9092"}, MaxMessageBytes: 10}, "max_message_bytes:"},
		{"sasl mechanism", Config{Brokers: []string{"h:9092"}, SASL: SASL{Mechanism: "gssapi", Username: "u", Password: "hunter2"}}, "sasl.mechanism:"},
		{"sasl user", Config{Brokers: []string{"h:9092"}, SASL: SASL{Password: "hunter2"}}, "sasl.mechanism:"},
		{"tls key", Config{Brokers: []string{"h:9092"}, TLS: TLS{Config: tlsconf.Config{CertFile: "c.pem"}}}, "key_file"},
		{"tls ca", Config{Brokers: []string{"h:9092"}, TLS: TLS{Config: tlsconf.Config{CAFile: "/nonexistent/ca.pem"}}}, "tls.ca_file:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: got %v, want an error naming %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
	c, err := Config{Brokers: []string{"h:9092"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.RequiredAcks != "all" || c.BatchTimeout != 5*time.Millisecond || c.BatchSize != 250 || c.MaxMessageBytes != 1<<20 || c.Partitioner != "murmur2" {
		t.Fatalf("defaults: %+v", c)
	}
}

// TestRecordSize checks that the sink's size check agrees with kafka-go's
// own, byte for byte: the writer refuses a message one byte over its
// BatchBytes before any network traffic.
// TestTLSKeys: the tls block takes enabled next to the certificate keys it
// shares with the other sinks, and rejects any other key.
func TestTLSKeys(t *testing.T) {
	decode := func(src string) (Config, error) {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(src), &n); err != nil {
			t.Fatal(err)
		}
		var c Config
		sc := relay.SinkConfig{Name: "k", Type: "kafka", Node: n.Content[0]}
		return c, sc.Decode(&c)
	}
	c, err := decode(`{brokers: ["h:9092"], tls: {enabled: true, ca_file: ca.pem, cert_file: c.pem, key_file: k.pem, server_name: kafka.example, insecure_skip_verify: true}}`)
	want := TLS{Enabled: true, Config: tlsconf.Config{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem", ServerName: "kafka.example", InsecureSkipVerify: true}}
	if err != nil || c.TLS != want {
		t.Errorf("decode: got %+v, %v; want %+v", c.TLS, err, want)
	}
	if _, err := decode(`{brokers: ["h:9092"], tls: {ca_fle: ca.pem}}`); err == nil || !strings.Contains(err.Error(), `did you mean "ca_file"`) {
		t.Errorf("unknown tls key: got %v", err)
	}
	if tc, err := (TLS{}).TLSConfig(); tc != nil || err != nil {
		t.Errorf("TLS off: TLSConfig() = %v, %v; want nil, nil", tc, err)
	}
	if tc, err := (TLS{Enabled: true}).TLSConfig(); tc == nil || err != nil {
		t.Errorf("tls.enabled: TLSConfig() = %v, %v; want a config", tc, err)
	}
}

func TestRecordSize(t *testing.T) {
	m := sinktest.NewMessage("t", "k", 1)
	m.Event.TenantID = "tenant"
	km := record(m)
	n := recordSize(&km)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, limit := range []int{n - 1, n} {
		tctx, tcancel := context.WithCancel(context.Background())
		tr := &kafkago.Transport{Context: tctx}
		w := &kafkago.Writer{Addr: kafkago.TCP("127.0.0.1:1"), BatchBytes: int64(limit), Transport: tr}
		err := w.WriteMessages(ctx, km)
		tr.CloseIdleConnections()
		tcancel()
		var tooLarge kafkago.MessageTooLargeError
		if got := errors.As(err, &tooLarge); got != (limit < n) {
			t.Errorf("BatchBytes %d, recordSize %d: writer says too large = %v (%v)", limit, n, got, err)
		}
		w.Close()
	}
}

// TestSplitTooLargeBatch: the broker refuses a produce batch that exceeds the
// topic's max.message.bytes as a whole; the sink re-sends its messages one by
// one, so only the message that is too large on its own fails.
func TestSplitTooLargeBatch(t *testing.T) {
	topic := testutil.RandomName("outbox-split-")
	createTopic(t, brokers(t), topic, map[string]string{"max.message.bytes": "4096"})
	s := newSink(t, Config{})
	defer s.Close()
	msgs := sinktest.Batch(topic, sinktest.Keys("split", 40), 0)
	msgs[17].Event.Payload = make([]byte, 6000)
	errs := s.Publish(context.Background(), msgs)
	if len(errs) != len(msgs) {
		t.Fatalf("Publish = %v, want one result per message", errs)
	}
	for i, err := range errs {
		switch {
		case i == 17 && !sink.Permanent(err):
			t.Errorf("oversized message: got %v, want a permanent error", err)
		case i != 17 && err != nil:
			t.Errorf("message %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got := consume(ctx, t, topic, 39); len(got) != 39 {
		t.Fatalf("consumed %d, want 39", len(got))
	}
}

func TestSASLAndAuthorization(t *testing.T) {
	if realCluster() {
		t.Skip("needs a kfake cluster with SASL and ACLs")
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.EnableSASL(),
		kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin-secret"),
		kfake.Superuser("SCRAM-SHA-256", "admin256", "secret-256"),
		kfake.Superuser("SCRAM-SHA-512", "admin512", "secret-512"),
		kfake.User("PLAIN", "writer", "writer-secret", kfake.ACL{
			Resource:  kmsg.ACLResourceTypeTopic,
			Name:      "allowed-",
			Pattern:   kmsg.ACLResourcePatternTypePrefixed,
			Operation: kmsg.ACLOperationAll,
			Allow:     true,
		}),
		kfake.SeedTopics(3, "allowed-orders", "denied-orders"),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, sasl := range []SASL{
		{Mechanism: "plain", Username: "admin", Password: "admin-secret"},
		{Mechanism: "scram-sha-256", Username: "admin256", Password: "secret-256"},
		{Mechanism: "SCRAM-SHA-512", Username: "admin512", Password: "secret-512"},
	} {
		t.Run(sasl.Mechanism, func(t *testing.T) {
			s, err := New(ctx, Config{Brokers: addrs, SASL: sasl}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			sinktest.Publish(t, s, sinktest.Batch("allowed-orders", sinktest.Keys(sasl.Mechanism, 3), 0))
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := New(ctx, Config{Brokers: addrs, SASL: SASL{Mechanism: "scram-sha-256", Username: "admin256", Password: "not-the-secret"}}, nil)
		if err == nil {
			s.Close()
			t.Fatal("New with a wrong password succeeded")
		}
		if strings.Contains(err.Error(), "not-the-secret") {
			t.Fatalf("error shows the password: %v", err)
		}
		t.Log(err)
	})

	t.Run("topic authorization", func(t *testing.T) {
		s, err := New(ctx, Config{Brokers: addrs, SASL: SASL{Mechanism: "plain", Username: "writer", Password: "writer-secret"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		msgs := []*sink.Message{
			sinktest.NewMessage("allowed-orders", "a", 0),
			sinktest.NewMessage("denied-orders", "b", 0),
		}
		errs := s.Publish(ctx, msgs)
		if len(errs) != 2 || errs[0] != nil {
			t.Fatalf("Publish = %v, want the allowed topic to work", errs)
		}
		if !sink.Permanent(errs[1]) || !errors.Is(errs[1], kafkago.TopicAuthorizationFailed) {
			t.Fatalf("denied topic: got %v, want a permanent TopicAuthorizationFailed", errs[1])
		}
		t.Log(errs[1])
	})
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and returns the
// server's tls.Config and the path of the CA file.
func selfSigned(t *testing.T) (*tls.Config, string) {
	t.Helper()
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
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, caFile
}

func TestTLS(t *testing.T) {
	if realCluster() {
		t.Skip("needs a kfake cluster with TLS")
	}
	serverTLS, caFile := selfSigned(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(serverTLS), kfake.SeedTopics(3, "tls-orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, Config{Brokers: c.ListenAddrs(), TLS: TLS{Config: tlsconf.Config{CAFile: caFile}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sinktest.Publish(t, s, sinktest.Batch("tls-orders", sinktest.Keys("tls", 3), 0))

	// Without the CA the certificate does not verify.
	ctx2, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if s2, err := New(ctx2, Config{Brokers: c.ListenAddrs(), TLS: TLS{Enabled: true}}, nil); err == nil {
		s2.Close()
		t.Fatal("connected to a self-signed broker without its CA")
	}
}

// TestLogAttributes: every line names the configured sink as "sink" (the
// relay passes logger.With("sink", name)) and the kind as "type".
func TestLogAttributes(t *testing.T) {
	logger, logs := sinktest.NewLogs("orders-kafka")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, Config{Brokers: brokers(t)}, logger)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	logs.Check(t, "orders-kafka", "kafka")
}
