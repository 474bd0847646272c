package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/outboxrelay/outbox/internal/tlsconf"
)

// Config configures the Kafka sink. The zero value of every field but Brokers
// is a working default.
type Config struct {
	// Brokers lists bootstrap brokers as host:port. Required.
	Brokers []string `yaml:"brokers"`
	// ClientID is the client id the brokers see. Defaults to "outbox-relay".
	ClientID string `yaml:"client_id"`
	// RequiredAcks is how many replicas must have the message before the
	// broker acknowledges it: "all" (the in-sync replicas, with the topic's
	// min.insync.replicas), "one" (the leader) or "none". Defaults to "all";
	// anything else can lose acknowledged events when a broker fails.
	RequiredAcks string `yaml:"required_acks"`
	// BatchSize caps the messages of one produce request per partition.
	// Defaults to 250. kafka-go allocates room for this many messages (~170
	// bytes each) for every new partition batch, however few it then holds:
	// with 1000, at a few thousand events per second the relay spent a
	// quarter of its CPU in allocation and GC (docs/performance.md).
	BatchSize int `yaml:"batch_size"`
	// BatchTimeout is how long a partition's partial batch waits for more
	// messages before it is sent (the linger). Defaults to 5ms. (kafka-go's
	// own default of 1s would add a second to every Publish.)
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	// MaxMessageBytes is the largest message the sink sends; larger ones fail
	// permanently without a round trip. It also caps the bytes of one produce
	// batch. Keep it at or below the brokers' message.max.bytes. Defaults to
	// 1048576 (1 MiB).
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// Compression is the codec for produce batches: "none", "gzip",
	// "snappy", "lz4" or "zstd". Defaults to "none".
	Compression string `yaml:"compression"`
	// Partitioner maps an event's ordering key to a partition: "murmur2"
	// (the Java client's default partitioner, so other producers of the same
	// keys agree), "crc32" (librdkafka's default) or "fnv1a" (kafka-go's
	// Hash). Defaults to "murmur2".
	Partitioner string `yaml:"partitioner"`
	// AutoCreateTopics lets the brokers create a missing topic on first use
	// (if they allow it). When false, a message to a topic that does not
	// exist fails permanently. Defaults to false.
	AutoCreateTopics bool `yaml:"auto_create_topics"`
	// MaxAttempts is how many times the client tries one produce request
	// before Publish reports the failure (the relay then retries with its own
	// backoff). Defaults to 3.
	MaxAttempts int `yaml:"max_attempts"`
	// DialTimeout bounds connecting to a broker, TLS and SASL included.
	// Defaults to 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// WriteTimeout bounds one produce request. Defaults to 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// TLS configures encryption and client certificates.
	TLS TLS `yaml:"tls"`
	// SASL configures authentication. Empty means none.
	SASL SASL `yaml:"sasl"`
}

// TLS configures a TLS connection. TLS is on when Enabled or any other field
// is set. The certificate fields are tlsconf.Config's (yaml keys ca_file,
// cert_file, key_file, server_name, insecure_skip_verify); ServerName
// defaults to the broker's host name.
type TLS struct {
	// Enabled turns TLS on. Setting any other field turns it on too.
	// Defaults to false.
	Enabled        bool `yaml:"enabled"`
	tlsconf.Config `yaml:",inline"`
}

func (t TLS) enabled() bool {
	return t.Enabled || t.Config != (tlsconf.Config{})
}

// TLSConfig returns the tls.Config, or nil when TLS is off.
func (t TLS) TLSConfig() (*tls.Config, error) {
	if !t.enabled() {
		return nil, nil
	}
	return t.Config.TLSConfig()
}

// SASL configures SASL authentication.
type SASL struct {
	// Mechanism is "plain", "scram-sha-256" or "scram-sha-512". Empty means
	// no authentication. Use PLAIN only over TLS.
	Mechanism string `yaml:"mechanism"`
	// Username and Password are the credentials. Put the password in the
	// environment (${KAFKA_PASSWORD}); the sink never logs it.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// LogValue leaves the password out of logs.
func (s SASL) LogValue() slog.Value {
	if s.Mechanism == "" {
		return slog.StringValue("none")
	}
	return slog.GroupValue(slog.String("mechanism", s.Mechanism), slog.String("username", s.Username))
}

var mechanisms = []string{"plain", "scram-sha-256", "scram-sha-512"}

func (s SASL) mechanism() (sasl.Mechanism, error) {
	switch strings.ToLower(s.Mechanism) {
	case "":
		if s.Username != "" || s.Password != "" {
			return nil, fmt.Errorf("sasl.mechanism: required with a username or password (one of %s)", strings.Join(mechanisms, ", "))
		}
		return nil, nil
	case "plain":
		if s.Username == "" {
			return nil, errors.New("sasl.username: required with sasl.mechanism plain")
		}
		return plain.Mechanism{Username: s.Username, Password: s.Password}, nil
	case "scram-sha-256", "scram-sha-512":
		if s.Username == "" {
			return nil, fmt.Errorf("sasl.username: required with sasl.mechanism %s", s.Mechanism)
		}
		algo := scram.SHA256
		if strings.HasSuffix(strings.ToLower(s.Mechanism), "512") {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, s.Username, s.Password)
		if err != nil {
			// The error may quote the username, never the password.
			return nil, fmt.Errorf("sasl: %w", err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("sasl.mechanism: unknown mechanism %q (valid: %s)", s.Mechanism, strings.Join(mechanisms, ", "))
}

// LogValue leaves secrets out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("brokers", c.Brokers),
		slog.String("required_acks", c.RequiredAcks),
		slog.Bool("tls", c.TLS.enabled()),
		slog.Any("sasl", c.SASL),
	)
}

// withDefaults fills defaults and validates; errors name the field.
func (c Config) withDefaults() (Config, error) {
	if len(c.Brokers) == 0 {
		return c, errors.New("brokers: at least one broker (host:port) is required")
	}
	for i, b := range c.Brokers {
		if b == "" || strings.Contains(b, "://") || !strings.Contains(b, ":") {
			return c, fmt.Errorf("brokers[%d]: %q is not host:port", i, b)
		}
	}
	if c.ClientID == "" {
		c.ClientID = "outbox-relay"
	}
	if c.RequiredAcks == "" {
		c.RequiredAcks = "all"
	}
	if _, err := c.acks(); err != nil {
		return c, err
	}
	if c.BatchSize == 0 {
		c.BatchSize = 250
	}
	if c.BatchSize < 0 {
		return c, fmt.Errorf("batch_size: %d is negative", c.BatchSize)
	}
	if c.BatchTimeout == 0 {
		c.BatchTimeout = 5 * time.Millisecond
	}
	if c.BatchTimeout < 0 {
		return c, fmt.Errorf("batch_timeout: %v is negative", c.BatchTimeout)
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 1 << 20
	}
	if c.MaxMessageBytes < 1024 {
		return c, fmt.Errorf("max_message_bytes: %d is below 1024", c.MaxMessageBytes)
	}
	if c.Compression == "" {
		c.Compression = "none"
	}
	if _, err := c.compression(); err != nil {
		return c, err
	}
	if c.Partitioner == "" {
		c.Partitioner = "murmur2"
	}
	if _, err := c.balancer(); err != nil {
		return c, err
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.MaxAttempts < 0 {
		return c, fmt.Errorf("max_attempts: %d is negative", c.MaxAttempts)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.DialTimeout < 0 || c.WriteTimeout < 0 {
		return c, errors.New("dial_timeout, write_timeout: must not be negative")
	}
	if _, err := c.TLS.TLSConfig(); err != nil {
		return c, err
	}
	if _, err := c.SASL.mechanism(); err != nil {
		return c, err
	}
	return c, nil
}

func (c Config) acks() (kafkago.RequiredAcks, error) {
	switch strings.ToLower(c.RequiredAcks) {
	case "all", "-1":
		return kafkago.RequireAll, nil
	case "one", "1":
		return kafkago.RequireOne, nil
	case "none", "0":
		return kafkago.RequireNone, nil
	}
	return 0, fmt.Errorf("required_acks: unknown value %q (valid: all, one, none)", c.RequiredAcks)
}

func (c Config) compression() (compress.Compression, error) {
	switch strings.ToLower(c.Compression) {
	case "none":
		return 0, nil
	case "gzip":
		return compress.Gzip, nil
	case "snappy":
		return compress.Snappy, nil
	case "lz4":
		return compress.Lz4, nil
	case "zstd":
		return compress.Zstd, nil
	}
	return 0, fmt.Errorf("compression: unknown codec %q (valid: none, gzip, snappy, lz4, zstd)", c.Compression)
}

func (c Config) balancer() (kafkago.Balancer, error) {
	switch strings.ToLower(c.Partitioner) {
	case "murmur2":
		return kafkago.Murmur2Balancer{Consistent: true}, nil
	case "crc32":
		return kafkago.CRC32Balancer{Consistent: true}, nil
	case "fnv1a":
		return &kafkago.Hash{}, nil
	}
	return nil, fmt.Errorf("partitioner: unknown partitioner %q (valid: murmur2, crc32, fnv1a)", c.Partitioner)
}

// Validate checks the config as New does, without connecting.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}
