// Package deploy holds no code: its tests check the deployment files beside
// them (compose.yaml at the root, Prometheus' config and alert rules, the
// Grafana dashboard) against the relay they describe, since no Docker engine
// runs where the tests do.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/outboxrelay/outbox/cmd/outbox/outboxcli"
	"github.com/outboxrelay/outbox/relay"
	"github.com/outboxrelay/outbox/relay/sink/stdout"
)

// root is the repository, seen from this package's directory.
const root = ".."

func repoPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{repoPath(t, "compose.yaml")},
		cli.WithWorkingDirectory(repoPath(t, ".")), cli.WithResolvedPaths(true), cli.WithConsistency(true))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("compose.yaml has no service %q (it has %v)", name, p.ServiceNames())
	}
	return s
}

// mountOf returns the host path the service mounts at target.
func mountOf(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == target {
			return v.Source
		}
	}
	t.Fatalf("service %s mounts nothing at %s", s.Name, target)
	return ""
}

func hostPort(t *testing.T, raw string) (host, port string) {
	t.Helper()
	host, port, err := net.SplitHostPort(raw)
	if err != nil {
		t.Fatalf("%q is not host:port: %v", raw, err)
	}
	return host, port
}

func publishes(s types.ServiceConfig, port string) bool {
	for _, p := range s.Ports {
		if fmt.Sprint(p.Target) == port {
			return true
		}
	}
	return false
}

// TestComposeFile checks compose.yaml the way `docker compose up` would load
// it, and that its pieces fit together: the services the docs name, the
// relay built from this repository's Dockerfile with a config that passes
// `outbox config check`, Prometheus scraping the relay's admin port with the
// alert rules loaded, Grafana finding the dashboard, Jaeger receiving the
// relay's OTLP/HTTP spans.
func TestComposeFile(t *testing.T) {
	p := loadCompose(t)

	// The services the spec asks for, every one the docs tell users to start
	// (`docker compose up -d NAME...`), and every one the README lists after
	// "`compose.yaml`:" (as `name`, up to the end of the sentence).
	want := []string{"postgres", "kafka", "nats", "rabbitmq", "redis", "relay", "prometheus", "jaeger", "grafana"}
	up := regexp.MustCompile("docker compose up(?: -d)?((?: [a-z][a-z0-9_-]*)+)")
	docs, _ := filepath.Glob(repoPath(t, "docs/*.md"))
	for _, f := range append([]string{repoPath(t, "README.md")}, docs...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range up.FindAllStringSubmatch(string(b), -1) {
			want = append(want, strings.Fields(m[1])...)
		}
	}
	named := regexp.MustCompile("`([a-z][a-z0-9-]*)`")
	lists := strings.Split(string(readFile(t, "README.md")), "`compose.yaml`:")
	if len(lists) < 2 {
		t.Errorf("the README does not list the services of compose.yaml (after \"`compose.yaml`:\")")
	}
	for _, list := range lists[1:] {
		list, _, _ = strings.Cut(list, ". ")
		for _, m := range named.FindAllStringSubmatch(list, -1) {
			want = append(want, m[1])
		}
	}
	for _, name := range want {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("the docs name service %q, but compose.yaml has only %v", name, p.ServiceNames())
		}
	}

	pg := service(t, p, "postgres")
	if !slices.Contains(pg.Command, "wal_level=logical") {
		t.Errorf("postgres runs %q, without -c wal_level=logical", pg.Command)
	}
	if !slices.Contains(service(t, p, "nats").Command, "-js") {
		t.Errorf("nats runs without JetStream (-js): %q", service(t, p, "nats").Command)
	}
	if roles := service(t, p, "kafka").Environment["KAFKA_PROCESS_ROLES"]; roles == nil || !strings.Contains(*roles, "controller") {
		t.Errorf("kafka is not a KRaft node (KAFKA_PROCESS_ROLES with controller)")
	}

	// The relay and the migrations are built from the repository's Dockerfile,
	// which builds the outbox command.
	dockerfile := string(readFile(t, "Dockerfile"))
	if !strings.Contains(dockerfile, "./cmd/outbox") {
		t.Errorf("the Dockerfile does not build ./cmd/outbox")
	}
	for _, name := range []string{"relay", "migrate"} {
		s := service(t, p, name)
		if s.Build == nil {
			t.Errorf("service %s is not built from the repository (image %q)", name, s.Image)
			continue
		}
		if s.Build.Context != repoPath(t, ".") {
			t.Errorf("service %s builds from %s, want the repository root", name, s.Build.Context)
		}
		if df := filepath.Join(s.Build.Context, s.Build.Dockerfile); filepath.Clean(df) != repoPath(t, "Dockerfile") {
			t.Errorf("service %s builds with %s, want the repository's Dockerfile", name, df)
		}
	}

	// Every file a service mounts is in the repository.
	for _, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			rel, err := filepath.Rel(repoPath(t, "."), v.Source)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("service %s mounts %s, outside the repository", s.Name, v.Source)
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("service %s mounts %s, which is not in the repository: %v", s.Name, rel, err)
			}
		}
	}

	// The relay's config is the mounted file its command names, and it passes
	// `outbox config check` with the environment compose gives it.
	rs := service(t, p, "relay")
	i := slices.Index(rs.Command, "--config")
	if i < 0 || i+1 >= len(rs.Command) {
		t.Fatalf("the relay's command %q has no --config", rs.Command)
	}
	relayYAML := mountOf(t, rs, rs.Command[i+1])
	for k, v := range rs.Environment {
		if v != nil {
			t.Setenv(k, *v)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := outboxcli.Main([]string{"config", "check", "--config", relayYAML}, nil, &stdout, &stderr); code != 0 {
		t.Errorf("outbox config check --config %s: exit %d\n%s%s", relayYAML, code, stdout.String(), stderr.String())
	}
	cfg, err := relay.LoadConfig(relayYAML)
	if err != nil {
		t.Fatal(err)
	}
	_, adminPort := hostPort(t, cfg.Admin.Listen)
	if !publishes(rs, adminPort) {
		t.Errorf("the relay's admin port %s (admin.listen) is not published", adminPort)
	}
	if u := cfg.Database.URL; !strings.Contains(u, "@postgres:") {
		t.Errorf("the relay's database.url %q does not point at the postgres service", u)
	}

	// Prometheus scrapes the relay's admin port and loads the alert rules.
	ps := service(t, p, "prometheus")
	var promCfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	i = slices.IndexFunc(ps.Command, func(a string) bool { return strings.HasPrefix(a, "--config.file=") })
	if i < 0 {
		t.Fatalf("prometheus runs without --config.file: %q", ps.Command)
	}
	promFile := mountOf(t, ps, strings.TrimPrefix(ps.Command[i], "--config.file="))
	b, err := os.ReadFile(promFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &promCfg); err != nil {
		t.Fatalf("%s: %v", promFile, err)
	}
	if len(promCfg.RuleFiles) == 0 {
		t.Errorf("%s loads no rule files", promFile)
	}
	for _, rf := range promCfg.RuleFiles {
		if got := mountOf(t, ps, rf); got != repoPath(t, "deploy/alerts.yml") {
			t.Errorf("prometheus loads rules from %s, which is %s, not deploy/alerts.yml", rf, got)
		}
	}
	scraped := false
	for _, sc := range promCfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			if slices.Contains(st.Targets, "relay:"+adminPort) {
				scraped = true
				if sc.JobName != "outbox-relay" {
					t.Errorf("the relay is scraped as job %q; the alerts and the dashboard expect outbox-relay", sc.JobName)
				}
			}
		}
	}
	if !scraped {
		t.Errorf("prometheus does not scrape relay:%s", adminPort)
	}

	// Grafana: the provisioned dashboard folder is where the provider looks,
	// and the data source is the prometheus service.
	gs := service(t, p, "grafana")
	prov := mountOf(t, gs, "/etc/grafana/provisioning")
	var providers struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if b, err := os.ReadFile(filepath.Join(prov, "dashboards", "outbox.yaml")); err != nil {
		t.Fatal(err)
	} else if err := yaml.Unmarshal(b, &providers); err != nil || len(providers.Providers) == 0 {
		t.Fatalf("grafana dashboard provider: %v", err)
	}
	dashDir := mountOf(t, gs, providers.Providers[0].Options.Path)
	if _, err := os.Stat(filepath.Join(dashDir, "outbox.json")); err != nil {
		t.Errorf("grafana's dashboard folder has no outbox.json: %v", err)
	}
	var sources struct {
		Datasources []struct {
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	if b, err := os.ReadFile(filepath.Join(prov, "datasources", "prometheus.yaml")); err != nil {
		t.Fatal(err)
	} else if err := yaml.Unmarshal(b, &sources); err != nil || len(sources.Datasources) == 0 {
		t.Fatalf("grafana data sources: %v", err)
	}
	if ds := sources.Datasources[0]; ds.Type != "prometheus" || ds.URL != "http://prometheus:9090" || !publishes(ps, "9090") {
		t.Errorf("grafana's data source is %s at %s; want prometheus at http://prometheus:9090", ds.Type, ds.URL)
	}

	// Jaeger receives the relay's spans over OTLP/HTTP, the only exporter built in.
	ep := rs.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]
	if ep == nil {
		t.Fatal("the relay has no OTEL_EXPORTER_OTLP_ENDPOINT: tracing is off")
	}
	u, err := url.Parse(*ep)
	if err != nil || u.Hostname() != "jaeger" || u.Port() != "4318" {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q: want http://jaeger:4318 (OTLP over HTTP)", *ep)
	}
	if on := service(t, p, "jaeger").Environment["COLLECTOR_OTLP_ENABLED"]; on == nil || *on != "true" {
		t.Errorf("jaeger does not accept OTLP (COLLECTOR_OTLP_ENABLED)")
	}
}

// metric is one metric family the relay exposes, with its label names.
type metric struct {
	labels []string
}

var (
	metricsOnce sync.Once
	metricsErr  error
	metricsMap  map[string]metric
)

// describer is a Registerer that records what is registered with it.
type describer struct {
	descs      []*prometheus.Desc
	histograms map[*prometheus.Desc]bool
}

// describeRelay collects the metrics a relay registers: a relay made with
// d as its Registerer (it registers them in New).
func describeRelay(t testing.TB) *describer {
	t.Helper()
	cfg, err := relay.NewConfig(relay.Config{
		Database: relay.DatabaseConfig{URL: "postgres://localhost/app"},
		Routes:   []relay.RouteConfig{{Name: "all", Match: "*", Sink: "out"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := &describer{}
	if _, err := relay.New(cfg, map[string]relay.Sink{"out": stdout.New(io.Discard, stdout.Config{})}, &relay.Options{Registerer: d}); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *describer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	_, isVec := c.(*prometheus.HistogramVec)
	_, isOne := c.(prometheus.Histogram)
	for desc := range ch {
		d.descs = append(d.descs, desc)
		if isVec || isOne {
			if d.histograms == nil {
				d.histograms = map[*prometheus.Desc]bool{}
			}
			d.histograms[desc] = true
		}
	}
	return nil
}

func (d *describer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		d.Register(c)
	}
}

func (d *describer) Unregister(prometheus.Collector) bool { return false }

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// knownMetrics are the metrics a relay exposes: those relay.New
// registers (with their labels, whether or not they have been observed yet),
// and those a running `outbox relay` serves on /metrics (build info, Go and
// process collectors). Histograms come with _bucket, _sum and _count.
func knownMetrics(t *testing.T) map[string]metric {
	t.Helper()
	metricsOnce.Do(func() { metricsMap, metricsErr = gatherMetrics(describeRelay(t), t.TempDir()) })
	if metricsErr != nil {
		t.Fatal(metricsErr)
	}
	return metricsMap
}

func gatherMetrics(d *describer, dir string) (map[string]metric, error) {
	out := map[string]metric{"up": {labels: []string{"job", "instance"}}}
	if len(d.descs) == 0 {
		return nil, fmt.Errorf("relay.New registered no metrics")
	}
	for _, desc := range d.descs {
		s := desc.String()
		m := descName.FindStringSubmatch(s)
		if m == nil {
			return nil, fmt.Errorf("cannot read the name of %s", s)
		}
		var labels []string
		if l := descLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
			labels = strings.Split(l[1], ",")
		}
		out[m[1]] = metric{labels: labels}
	}

	// The metrics the command adds: scrape a relay that runs with a stdout
	// sink and waits for a database that is not there.
	bin := filepath.Join(dir, "outbox")
	if b, err := exec.Command("go", "build", "-o", bin, "../cmd/outbox").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ../cmd/outbox: %v\n%s", err, b)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	admin := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "relay.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`database: {url: 'postgres://nobody@127.0.0.1:1/none?connect_timeout=1'}
admin: {listen: '%s'}
sinks: [{name: out, type: stdout}]
routes: [{name: all, match: '*', sink: out, destination: events}]
`, admin)), 0o600)
	cmd := exec.Command(bin, "relay", "--config", cfg)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var body []byte
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no /metrics from the relay within 30s: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	typeLine := regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`)
	for _, m := range typeLine.FindAllStringSubmatch(string(body), -1) {
		if _, ok := out[m[1]]; !ok {
			labels := []string{}
			if m[1] == "outbox_build_info" {
				labels = []string{"version"}
			}
			out[m[1]] = metric{labels: labels}
		}
	}
	if _, ok := out["outbox_build_info"]; !ok {
		return nil, fmt.Errorf("the relay serves no outbox_build_info:\n%s", body)
	}
	// Histograms: the series PromQL sees.
	if len(d.histograms) == 0 {
		return nil, fmt.Errorf("relay.New registered no histogram")
	}
	for desc := range d.histograms {
		name := descName.FindStringSubmatch(desc.String())[1]
		{
			m := out[name]
			out[name+"_bucket"] = metric{labels: append(slices.Clone(m.labels), "le")}
			out[name+"_sum"] = m
			out[name+"_count"] = m
		}
	}
	return out, nil
}

var (
	stringLit  = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	rangeSel   = regexp.MustCompile(`\[[^\]]*\]`)
	identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	grouping   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	matcher    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	selector   = regexp.MustCompile(`\{[^}]*\}`)
)

// checkExpr reports the metrics expr uses that the relay does not expose,
// and label names that none of its metrics carry.
func checkExpr(t *testing.T, where, expr string, known map[string]metric, used map[string]bool) {
	t.Helper()
	if strings.TrimSpace(expr) == "" {
		t.Errorf("%s: empty query", where)
		return
	}
	if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
		t.Errorf("%s: unbalanced brackets in %q", where, expr)
	}
	bare := stringLit.ReplaceAllString(expr, `""`)
	bare = rangeSel.ReplaceAllString(bare, "[]")
	labelsOK := map[string]bool{"job": true, "instance": true}
	var names []string
	for _, loc := range identifier.FindAllStringIndex(bare, -1) {
		tok := bare[loc[0]:loc[1]]
		rest := strings.TrimLeft(bare[loc[1]:], " ")
		isMetric := strings.HasPrefix(tok, "outbox_") || strings.HasPrefix(tok, "go_") || strings.HasPrefix(tok, "process_") || tok == "up"
		if strings.HasPrefix(rest, "{") && !isMetric && loc[0] > 0 && bare[loc[0]-1] != '(' {
			isMetric = true // a selector of some other name: it must be known too
		}
		if !isMetric || strings.HasPrefix(rest, "(") {
			continue
		}
		m, ok := known[tok]
		if !ok {
			t.Errorf("%s: %q uses %s, which the relay does not expose", where, expr, tok)
			continue
		}
		used[tok] = true
		names = append(names, tok)
		for _, l := range m.labels {
			labelsOK[l] = true
		}
	}
	if len(names) == 0 {
		return
	}
	var labels []string
	for _, g := range grouping.FindAllStringSubmatch(bare, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	for _, sel := range selector.FindAllString(stringLit.ReplaceAllString(expr, `""`), -1) {
		for _, m := range matcher.FindAllStringSubmatch(sel, -1) {
			labels = append(labels, m[1])
		}
	}
	for _, l := range labels {
		if !labelsOK[l] {
			t.Errorf("%s: %q uses label %q, which none of %v has", where, expr, l, names)
		}
	}
}

// TestDashboardUsesRelayMetrics parses the Grafana dashboard and checks that
// every query uses metrics and labels the relay exposes, and that every
// metric of the relay has a panel.
func TestDashboardUsesRelayMetrics(t *testing.T) {
	known := knownMetrics(t)
	var dash struct {
		UID           string            `json:"uid"`
		Title         string            `json:"title"`
		SchemaVersion int               `json:"schemaVersion"`
		Panels        []json.RawMessage `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string          `json:"name"`
				Type       string          `json:"type"`
				Definition string          `json:"definition"`
				Query      json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	b := readFile(t, "deploy/grafana/dashboards/outbox.json")
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion == 0 || len(dash.Panels) == 0 {
		t.Fatalf("the dashboard lacks a uid, title, schemaVersion or panels")
	}
	used := map[string]bool{}
	vars := map[string]bool{"__rate_interval": true, "__range": true, "__interval": true}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		if v.Type == "query" {
			checkExpr(t, "variable "+v.Name, v.Definition, known, used)
		}
	}

	type panel struct {
		ID         int               `json:"id"`
		Type       string            `json:"type"`
		Title      string            `json:"title"`
		Panels     []json.RawMessage `json:"panels"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		GridPos struct{ X, Y, W, H int } `json:"gridPos"`
		Targets []struct {
			Expr       string `json:"expr"`
			RefID      string `json:"refId"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"targets"`
	}
	ids := map[int]string{}
	varRef := regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`)
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("panel %s: %v", r, err)
			}
			if other, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: gridPos %+v does not fit the 24-column grid", p.Title, p.GridPos)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			if p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: data source %q, want the dashboard's ${datasource} variable", p.Title, p.Datasource.UID)
			}
			for _, tg := range p.Targets {
				where := fmt.Sprintf("panel %q query %s", p.Title, tg.RefID)
				if tg.Datasource.UID != "${datasource}" {
					t.Errorf("%s: data source %q, want ${datasource}", where, tg.Datasource.UID)
				}
				for _, m := range varRef.FindAllStringSubmatch(tg.Expr, -1) {
					if !vars[m[1]] {
						t.Errorf("%s: %q uses $%s, which the dashboard does not define", where, tg.Expr, m[1])
					}
				}
				checkExpr(t, where, tg.Expr, known, used)
			}
		}
	}
	walk(dash.Panels)

	// Every metric of the relay is on the dashboard.
	d := describeRelay(t)
	for _, desc := range d.descs {
		name := descName.FindStringSubmatch(desc.String())[1]
		if !used[name] && !used[name+"_bucket"] && !used[name+"_count"] {
			t.Errorf("no panel shows %s", name)
		}
	}
	if !used["outbox_build_info"] {
		t.Errorf("no panel shows outbox_build_info")
	}
}

// headingAnchors are the GitHub anchors of a Markdown file's headings.
func headingAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	inFence := false
	for line := range strings.Lines(md) {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		anchors[strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-")] = true
	}
	return anchors
}

// TestAlertRules checks deploy/alerts.yml: the alerts the issue asks for,
// each on metrics the relay exposes, with a severity, a summary and a runbook
// link to a section of docs/operations.md, and each explained in
// docs/observability.md.
func TestAlertRules(t *testing.T) {
	known := knownMetrics(t)
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, "deploy/alerts.yml")))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("deploy/alerts.yml: %v", err)
	}
	runbook := headingAnchors(string(readFile(t, "docs/operations.md")))
	observability := string(readFile(t, "docs/observability.md"))
	runbooks := map[string]bool{}
	names := map[string]bool{}
	used := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || names[r.Alert] {
				t.Errorf("group %s: an alert without a name, or a duplicate: %q", g.Name, r.Alert)
			}
			names[r.Alert] = true
			checkExpr(t, "alert "+r.Alert, r.Expr, known, used)
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if s := r.Labels["severity"]; s != "page" && s != "ticket" {
				t.Errorf("alert %s: severity %q, want page or ticket", r.Alert, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("alert %s has no summary", r.Alert)
			}
			doc, anchor, _ := strings.Cut(r.Annotations["runbook"], "#")
			if doc != "docs/operations.md" || !runbook[anchor] {
				t.Errorf("alert %s: runbook %q is not a section of docs/operations.md", r.Alert, r.Annotations["runbook"])
			}
			runbooks[anchor] = true
			if !strings.Contains(observability, r.Alert) {
				t.Errorf("docs/observability.md does not explain alert %s", r.Alert)
			}
		}
	}
	for _, want := range []string{"slot-lag-growing", "backlog-age", "dead-letters-growing", "relay-not-ready", "no-active-relay"} {
		if !runbooks[want] {
			t.Errorf("no alert links the runbook #%s", want)
		}
	}
}

// TestDocumentedMetrics checks that docs/observability.md describes every
// metric the relay registers.
func TestDocumentedMetrics(t *testing.T) {
	doc := string(readFile(t, "docs/observability.md"))
	d := describeRelay(t)
	for _, desc := range append(d.descs, prometheus.NewDesc("outbox_build_info", "", []string{"version"}, nil)) {
		s := desc.String()
		name := descName.FindStringSubmatch(s)[1]
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("docs/observability.md does not describe %s", name)
			continue
		}
		if l := descLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
			line := doc[strings.Index(doc, "`"+name+"`"):]
			line, _, _ = strings.Cut(line, "\n")
			for _, label := range strings.Split(l[1], ",") {
				if !strings.Contains(line, "`"+label+"`") {
					t.Errorf("docs/observability.md: the line of %s does not name its label %s", name, label)
				}
			}
		}
	}
}
