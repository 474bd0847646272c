package redis

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	goredis "github.com/redis/go-redis/v9"
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

// TLS configures certificates for a TLS (rediss) connection.
type TLS struct {
	// CAFile is a PEM file of the certificate authorities to trust. Defaults
	// to the system's pool.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and key (PEM) for
	// mutual TLS. Defaults to none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked against the server certificate.
	// Defaults to the URL's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables certificate verification. For tests only.
	// Defaults to false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

func (t TLS) set() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

func (t TLS) apply(c *tls.Config) error {
	c.MinVersion = tls.VersionTLS12
	c.InsecureSkipVerify = t.InsecureSkipVerify
	if t.ServerName != "" {
		c.ServerName = t.ServerName
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return fmt.Errorf("tls.ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls.ca_file: no PEM certificate in %s", t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("tls: cert_file and key_file go together: set both or neither")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return fmt.Errorf("tls.cert_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return nil
}

// LogValue leaves the password out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", Redact(c.URL)),
		slog.Int64("max_len", c.MaxLen),
	)
}

// Redact returns rawURL with its password replaced by "xxxxx"; a URL that
// does not parse is replaced as a whole, since it may hold a password.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

// parseURL parses rawURL with an error that does not quote it: net/url's
// errors repeat the whole URL, password included.
func parseURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err == nil {
		return u, nil
	}
	var uerr *url.Error
	var eerr url.EscapeError
	if errors.As(err, &uerr) && !errors.As(err, &eerr) {
		return nil, fmt.Errorf("url: does not parse: %v (percent-encode reserved characters in the user name and password)", uerr.Err)
	}
	return nil, errors.New("url: does not parse (percent-encode reserved characters in the user name and password)")
}

// options fills defaults, validates and returns go-redis options; errors
// name the field and never show the password.
func (c Config) options() (Config, *goredis.Options, error) {
	if c.URL == "" {
		return c, nil, errors.New("url: required (redis://user:password@host:6379/0)")
	}
	u, err := parseURL(c.URL)
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
		if err := c.TLS.apply(opts.TLSConfig); err != nil {
			return c, nil, err
		}
	} else if c.TLS.set() {
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
