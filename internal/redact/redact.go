// Package redact keeps the passwords in connection URLs out of logs and
// error messages; every sink uses it for its broker URLs. PostgreSQL
// connection strings are the exception: pgx masks the password in its own
// parse errors, for URLs and keyword/value strings alike (the relay's
// TestDatabaseURLErrorsHidePassword checks it), and the relay prints those
// errors as they are.
package redact

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// URL returns rawURL with its password replaced by "xxxxx"; a URL that does
// not parse is replaced as a whole, since it may hold a password.
func URL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

// URLs is URL for a comma-separated list of URLs (NATS's form for several
// servers): each is redacted on its own.
func URLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		parts[i] = URL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

// ParseURL parses rawURL with an error that does not quote it: net/url's
// errors repeat the whole URL, password included. The error names the
// config key, "url: ...".
func ParseURL(rawURL string) (*url.URL, error) {
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
