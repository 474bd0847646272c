package rabbitmq

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Config configures the RabbitMQ sink.
type Config struct {
	// URL is the broker's AMQP 0-9-1 URL,
	// amqp[s]://user:password@host:port/vhost (the vhost path-escaped, so
	// "/" is %2F). amqps turns TLS on. Put the password in the environment
	// (${AMQP_URL}); the sink never logs it. Required.
	URL string `yaml:"url"`
	// Exchange is the exchange of destinations without a '/': such a
	// destination is the routing key. Defaults to "", the default exchange,
	// where the routing key is a queue name.
	Exchange string `yaml:"exchange"`
	// ConfirmTimeout bounds the wait for the broker's publisher confirms of
	// one batch. Defaults to 30s.
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// DialTimeout bounds connecting, TLS and the AMQP handshake included.
	// Defaults to 10s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// Heartbeat is the AMQP heartbeat interval, which finds a dead
	// connection. Defaults to 10s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// Channels caps the channels publishing at once (one per Publish call in
	// progress; more calls wait). Defaults to 8.
	Channels int `yaml:"channels"`
	// MaxMessageBytes is the largest payload the sink sends; larger ones
	// fail permanently without a round trip (the broker would close the
	// channel). Keep it at or below the broker's max_message_size. Defaults
	// to 134217728 (128 MiB, RabbitMQ's default).
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// ConnectionName is shown in the management UI. Defaults to
	// "outbox-relay".
	ConnectionName string `yaml:"connection_name"`
	// TLS configures certificates for amqps URLs.
	TLS TLS `yaml:"tls"`
}

// TLS configures certificates for a TLS (amqps) connection.
type TLS struct {
	// CAFile is a PEM file of the certificate authorities to trust. Defaults
	// to the system's pool.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and key (PEM) for
	// mutual TLS (and the EXTERNAL mechanism). Defaults to none.
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

func (t TLS) config(host string) (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         host,
		InsecureSkipVerify: t.InsecureSkipVerify,
	}
	if t.ServerName != "" {
		c.ServerName = t.ServerName
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: no PEM certificate in %s", t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("tls: cert_file and key_file go together: set both or neither")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// LogValue leaves the password out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", Redact(c.URL)),
		slog.String("exchange", c.Exchange),
		slog.Duration("confirm_timeout", c.ConfirmTimeout),
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

// withDefaults fills defaults and validates; errors name the field and never
// show the password.
func (c Config) withDefaults() (Config, *tls.Config, error) {
	if c.URL == "" {
		return c, nil, errors.New("url: required (amqp://user:password@host:5672/vhost)")
	}
	if _, err := parseURL(c.URL); err != nil {
		return c, nil, err
	}
	uri, err := amqp.ParseURI(c.URL)
	if err != nil {
		// The URL parses (above), so amqp091's errors do not quote it.
		return c, nil, fmt.Errorf("url %s: %w", Redact(c.URL), err)
	}
	var tlsConfig *tls.Config
	if uri.Scheme == "amqps" {
		if tlsConfig, err = c.TLS.config(uri.Host); err != nil {
			return c, nil, err
		}
	} else if c.TLS.set() {
		return c, nil, fmt.Errorf("tls: set, but url %s is not amqps://", Redact(c.URL))
	}
	if c.ConfirmTimeout == 0 {
		c.ConfirmTimeout = 30 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 10 * time.Second
	}
	if c.Channels == 0 {
		c.Channels = 8
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 128 << 20
	}
	if c.ConnectionName == "" {
		c.ConnectionName = "outbox-relay"
	}
	switch {
	case c.ConfirmTimeout < 0:
		return c, nil, fmt.Errorf("confirm_timeout: %v is negative", c.ConfirmTimeout)
	case c.DialTimeout < 0:
		return c, nil, fmt.Errorf("dial_timeout: %v is negative", c.DialTimeout)
	case c.Heartbeat < 0:
		return c, nil, fmt.Errorf("heartbeat: %v is negative", c.Heartbeat)
	case c.Channels < 0:
		return c, nil, fmt.Errorf("channels: %d is negative", c.Channels)
	case c.MaxMessageBytes < 0:
		return c, nil, fmt.Errorf("max_message_bytes: %d is negative", c.MaxMessageBytes)
	}
	return c, tlsConfig, nil
}
