package rabbitmq

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outboxrelay/outbox/internal/redact"
	"github.com/outboxrelay/outbox/internal/tlsconf"
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

// TLS configures certificates for a TLS (amqps) connection: yaml keys
// ca_file, cert_file and key_file (the client certificate also serves the
// EXTERNAL mechanism), server_name (defaults to the URL's host) and
// insecure_skip_verify. See tlsconf.Config.
type TLS = tlsconf.Config

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
func Redact(rawURL string) string { return redact.URL(rawURL) }

// withDefaults fills defaults and validates; errors name the field and never
// show the password.
func (c Config) withDefaults() (Config, *tls.Config, error) {
	if c.URL == "" {
		return c, nil, errors.New("url: required (amqp://user:password@host:5672/vhost)")
	}
	if _, err := redact.ParseURL(c.URL); err != nil {
		return c, nil, err
	}
	uri, err := amqp.ParseURI(c.URL)
	if err != nil {
		// The URL parses (above), so amqp091's errors do not quote it.
		return c, nil, fmt.Errorf("url %s: %w", Redact(c.URL), err)
	}
	var tlsConfig *tls.Config
	if uri.Scheme == "amqps" {
		if tlsConfig, err = c.TLS.TLSConfig(); err != nil {
			return c, nil, err
		}
		tlsConfig.ServerName = cmp.Or(tlsConfig.ServerName, uri.Host)
	} else if c.TLS != (TLS{}) {
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

// Validate checks the config as New does, without connecting.
func (c Config) Validate() error {
	_, _, err := c.withDefaults()
	return err
}
