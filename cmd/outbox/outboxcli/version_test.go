package outboxcli

import (
	"bytes"
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	defer func(v string) { Version = v }(Version)
	stamped := []debug.BuildSetting{
		{Key: "-buildmode", Value: "exe"},
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "c185b879fce53490401ced3660efc21bce2b4268"},
		{Key: "vcs.time", Value: "2026-11-27T13:04:47Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	for _, tc := range []struct {
		name, ldflags string
		bi            *debug.BuildInfo
		want          versionInfo
	}{
		{"go install @version", "dev", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}},
			versionInfo{Version: "v1.2.3", Go: "go1.26.8"}},
		{"go build in a dirty checkout", "dev", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261127130447-c185b879fce5+dirty"}, Settings: stamped},
			versionInfo{Version: "v0.0.0-20261127130447-c185b879fce5+dirty", Commit: "c185b879fce53490401ced3660efc21bce2b4268", CommitTime: "2026-11-27T13:04:47Z", Modified: true, Go: "go1.26.8"}},
		{"go run", "dev", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			versionInfo{Version: "dev", Go: "go1.26.8"}},
		{"-ldflags -X wins", "v9.9.9", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}},
			versionInfo{Version: "v9.9.9", Go: "go1.26.8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			Version = tc.ldflags
			tc.want.Platform = runtime.GOOS + "/" + runtime.GOARCH
			if got := buildVersion(tc.bi, true); got != tc.want {
				t.Errorf("buildVersion:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestVersionCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"version", "--json"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("outbox version --json: exit %d: %s", code, errb.String())
	}
	var v versionInfo
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("outbox version --json: %v\n%s", err, out.String())
	}
	if v.Version != Version || v.Version == "" || v.Go != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("outbox version --json = %+v; want version %q, go %q", v, Version, runtime.Version())
	}
	out.Reset()
	if code := Main([]string{"version"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("outbox version: exit %d: %s", code, errb.String())
	}
	if first, _, _ := strings.Cut(out.String(), "\n"); !strings.HasPrefix(first, "outbox") || !strings.HasSuffix(first, " "+Version) {
		t.Errorf("outbox version: first line %q, want `outbox  %s`", first, Version)
	}
}

// TestHelpTexts: the root help names every sink and the version command;
// `migrate inbox` shows no --publication (the inbox has no publication).
func TestHelpTexts(t *testing.T) {
	help := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := Main(args, strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("outbox %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
		}
		return out.String()
	}
	root := help("--help")
	for _, want := range []string{"Kafka", "NATS JetStream", "RabbitMQ", "Redis Streams", "stdout", "Print the version, the commit"} {
		if !strings.Contains(root, want) {
			t.Errorf("outbox --help does not mention %q:\n%s", want, root)
		}
	}
	for _, args := range [][]string{{"migrate", "inbox", "--help"}, {"migrate", "inbox", "up", "--help"}, {"migrate", "inbox", "sql", "--help"}} {
		if h := help(args...); strings.Contains(h, "--publication") {
			t.Errorf("outbox %s shows --publication, which the inbox does not use:\n%s", strings.Join(args, " "), h)
		}
	}
	for _, args := range [][]string{{"migrate", "up", "--help"}, {"migrate", "down", "--help"}, {"migrate", "status", "--help"}, {"migrate", "sql", "--help"}} {
		if h := help(args...); !strings.Contains(h, "--publication") {
			t.Errorf("outbox %s lost --publication:\n%s", strings.Join(args, " "), h)
		}
	}
}
