package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The SDK is what applications import, so its module must stay small and old
// (docs/architecture.md, "Modules"). These bounds are what the SDK costs today;
// a change that raises one must say why there.
const (
	// sdkMaxGoMinor: the sdk module's go line may be no newer than 1.24.
	sdkMaxGoMinor = 24
	// sdkMaxModules bounds `go list -m all` of an application that requires
	// only the SDK. Most of it is pgx's and OpenTelemetry's own requirement
	// lists (testify and friends), which Go's module graph includes although
	// nothing of them is compiled: pgx brings 15 of the 26, OpenTelemetry 7.
	sdkMaxModules = 26
	// sdkMaxBuilt bounds the modules whose packages the application compiles.
	sdkMaxBuilt = 9
)

// Modules of the relay that must never reach an application through the SDK.
var relayOnly = []string{"github.com/jackc/pglogrepl", "github.com/segmentio/", "github.com/twmb/", "github.com/nats-io/",
	"github.com/rabbitmq/", "github.com/redis/", "cel.dev/", "github.com/prometheus/", "github.com/testcontainers/",
	"github.com/pressly/", "github.com/spf13/", "go.yaml.in/", "github.com/cenkalti/", "go.opentelemetry.io/otel/sdk",
	"go.opentelemetry.io/otel/exporters"}

// TestSDKModuleIsSmall builds a throwaway application that imports every
// public SDK package, with the SDK module as its only requirement, and bounds
// what that costs it.
func TestSDKModuleIsSmall(t *testing.T) {
	t.Parallel()
	sdkDir, err := filepath.Abs("../sdk")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(sdkDir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go 1\.(\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatalf("sdk/go.mod has no go line:\n%s", gomod)
	}
	if minor, _ := strconv.Atoi(string(m[1])); minor > sdkMaxGoMinor {
		t.Errorf("sdk/go.mod says go 1.%d: applications would need Go 1.%d; keep it at 1.%d or older (require older minimum versions of its dependencies)", minor, minor, sdkMaxGoMinor)
	}

	app := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(app, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/app\n\ngo 1.24\n\nrequire github.com/outboxrelay/outbox/sdk v0.0.0-00010101000000-000000000000\n\n"+
		"replace github.com/outboxrelay/outbox/sdk => "+sdkDir+"\n")
	var imports strings.Builder
	for _, p := range []string{"", "/history", "/inbox", "/outboxtest", "/versions", "/wire", "/outboxschema", "/pgtime"} {
		imports.WriteString("\t_ \"github.com/outboxrelay/outbox/sdk" + p + "\"\n")
	}
	write("main.go", "package main\n\nimport (\n"+imports.String()+")\n\nfunc main() {}\n")

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = app
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("mod", "tidy")
	run("build", "./...")
	all := strings.Fields(run("list", "-m", "-f", "{{.Path}}", "all"))
	built := strings.Fields(run("list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", "./..."))
	built = uniq(built)
	t.Logf("an application importing the SDK: %d modules in go list -m all, %d compiled: %v", len(all), len(built), built)
	if len(all) > sdkMaxModules {
		t.Errorf("go list -m all of an application requiring only the SDK lists %d modules, more than %d:\n%s", len(all), sdkMaxModules, strings.Join(all, "\n"))
	}
	if len(built) > sdkMaxBuilt {
		t.Errorf("an application importing the SDK compiles %d modules, more than %d: %v", len(built), sdkMaxBuilt, built)
	}
	for _, mod := range all {
		for _, bad := range relayOnly {
			if strings.HasPrefix(mod, bad) {
				t.Errorf("the SDK's module graph reaches %s, a dependency of the relay (%q)", mod, bad)
			}
		}
	}
}

func uniq(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
