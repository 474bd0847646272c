package tlsconf

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTLSConfig(t *testing.T) {
	tc, err := Config{InsecureSkipVerify: true}.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion != tls.VersionTLS12 || tc.ServerName != "" || !tc.InsecureSkipVerify || tc.RootCAs != nil || tc.Certificates != nil {
		t.Errorf("TLSConfig() = %+v, want TLS 1.2, no server name, skip verify, system roots, no certificate", tc)
	}
	if tc, err := (Config{ServerName: "broker.example"}).TLSConfig(); err != nil || tc.ServerName != "broker.example" {
		t.Errorf("server_name: got %v, %v", tc, err)
	}

	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"missing ca", Config{CAFile: "/nonexistent/ca.pem"}, "tls.ca_file:"},
		{"no pem", Config{CAFile: notPEM}, "tls.ca_file: no PEM certificate"},
		{"cert alone", Config{CertFile: "c.pem"}, "tls: cert_file and key_file go together"},
		{"key alone", Config{KeyFile: "k.pem"}, "tls: cert_file and key_file go together"},
		{"missing cert", Config{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}, "tls.cert_file:"},
	} {
		if _, err := tc.c.TLSConfig(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error starting %q", tc.name, err, tc.want)
		}
	}
}
