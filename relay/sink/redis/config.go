package redis

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outboxrelay/outbox/internal/redact"
	"github.com/outboxrelay/outbox/internal/tlsconf"
)

// Config configures the Redis Streams sink.
type Config struct {
	// URL is redis[s]://[user[:password]@]host:port[/db]; rediss turns TLS
	// on, the user is an ACL user (Redis 6+). Put the password in the
	// environment (${REDIS_URL}); the sink never logs it. Required.
	URL string `yaml:"url"`
	// MaxLen caps each stream at about this many entries (XADD MAXLEN ~ N:
	// Redis trims whole nodes, so a stream can hold a little more). 0 keeps
	// every entry. Defaults to 0.
	MaxLen int64 `yaml:"max_len"`
	// NoMkStream makes a message to a stream that does not exist fail
	// permanently (XADD NOMKSTREAM) instead of creating the stream. Defaults
	// to false.
	NoMkStream bool `yaml:"no_mkstream"`
	// MaxMessageBytes is the largest payload the sink sends; larger ones
	// fail permanently without a round trip. Defaults to 536870912 (512 MiB,
	// Redis's proto-max-bulk-len).
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxRetries is how many times the client re-sends a pipeline that
	// failed on the network before Publish reports the failure. A re-sent
	// pipeline whose first reply was lost writes its entries twice; the
	// relay retries with backoff anyway. Defaults to 0.
	MaxRetries int `yaml:"max_retries"`
	// DialTimeout bounds connecting, TLS and authentication included.
	// Defaults to 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ReadTimeout and WriteTimeout bound one socket read or write. Default
	// to 10s.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// PoolSize caps the connections (one per Publish call in progress).
	// Defaults to 10.
	PoolSize int `yaml:"pool_size"`
	// TLS configures certificates for rediss URLs.
	TLS TLS `yaml:"tls"`
}

// TLS configures certificates for a TLS (rediss) connection: yaml keys
// ca_file, cert_file, key_file, server_name (defaults to the URL's host) and
// insecure_skip_verify. See tlsconf.Config.
type TLS = tlsconf.Config

// LogValue leaves the password out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", Redact(c.URL)),
		slog.Int64("max_len", c.MaxLen),
	)
}

// Redact returns rawURL with its password replaced by "xxxxx"; a URL that
// does not parse is replaced as a whole, since it may hold a password.
func Redact(rawURL string) string { return redact.URL(rawURL) }

// options fills defaults, validates and returns go-redis options; errors
// name the field and never show the password.
func (c Config) options() (Config, *goredis.Options, error) {
	if c.URL == "" {
		return c, nil, errors.New("url: required (redis://user:password@host:6379/0)")
	}
	u, err := redact.ParseURL(c.URL)
	if err != nil {
		return c, nil, err
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return c, nil, fmt.Errorf("url %s: scheme must be redis or rediss", Redact(c.URL))
	}
	opts, err := goredis.ParseURL(c.URL)
	if err != nil {
		// The URL parses (above), so go-redis's errors do not quote it.
		return c, nil, fmt.Errorf("url %s: %w", Redact(c.URL), err)
	}
	if opts.TLSConfig != nil {
		// go-redis sets only ServerName (the URL's host), MinVersion and
		// InsecureSkipVerify (from ?skip_verify); the sink takes the last
		// from tls.insecure_skip_verify alone.
		tc, err := c.TLS.TLSConfig()
		if err != nil {
			return c, nil, err
		}
		tc.ServerName = cmp.Or(tc.ServerName, opts.TLSConfig.ServerName)
		opts.TLSConfig = tc
	} else if c.TLS != (TLS{}) {
		return c, nil, fmt.Errorf("tls: set, but url %s is not rediss://", Redact(c.URL))
	}
	if c.MaxLen < 0 {
		return c, nil, fmt.Errorf("max_len: %d is negative", c.MaxLen)
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 512 << 20
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PoolSize == 0 {
		c.PoolSize = 10
	}
	switch {
	case c.MaxMessageBytes < 0:
		return c, nil, fmt.Errorf("max_message_bytes: %d is negative", c.MaxMessageBytes)
	case c.MaxRetries < 0:
		return c, nil, fmt.Errorf("max_retries: %d is negative", c.MaxRetries)
	case c.DialTimeout < 0, c.ReadTimeout < 0, c.WriteTimeout < 0:
		return c, nil, errors.New("dial_timeout, read_timeout, write_timeout: must not be negative")
	case c.PoolSize < 0:
		return c, nil, fmt.Errorf("pool_size: %d is negative", c.PoolSize)
	}
	opts.DialTimeout = c.DialTimeout
	opts.ReadTimeout = c.ReadTimeout
	opts.WriteTimeout = c.WriteTimeout
	opts.PoolSize = c.PoolSize
	opts.MaxRetries = c.MaxRetries
	if c.MaxRetries == 0 {
		opts.MaxRetries = -1 // go-redis reads 0 as its default, 3
	}
	opts.ClientName = "outbox-relay"
	opts.ContextTimeoutEnabled = true
	return c, opts, nil
}

// Validate checks the config as New does, without connecting.
func (c Config) Validate() error {
	_, _, err := c.options()
	return err
}
