package outboxcli

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func init() {
	// Without -ldflags "-X .../outboxcli.Version=...", the version is the
	// module's, as the go command recorded it: v1.2.3 from `go install
	// ...@v1.2.3`, a pseudo-version (v0.0.0-DATE-COMMIT, +dirty when the
	// checkout had changes) from `go build` in a git checkout.
	if Version == "dev" {
		bi, ok := debug.ReadBuildInfo()
		Version = buildVersion(bi, ok).Version
	}
}

// versionInfo is what `outbox version` prints.
type versionInfo struct {
	Version    string `json:"version"`
	Commit     string `json:"commit,omitempty"`
	CommitTime string `json:"commit_time,omitempty"`
	Modified   bool   `json:"modified"`
	Go         string `json:"go"`
	Platform   string `json:"platform"`
}

// buildVersion reads the module version and the VCS stamp from the binary's
// build information.
func buildVersion(bi *debug.BuildInfo, ok bool) versionInfo {
	v := versionInfo{Version: Version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if !ok || bi == nil {
		return v
	}
	if v.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func (a *app) versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, the commit it was built from, and the Go version",
		Long: "Print the module version (v1.2.3 from `go install ...@v1.2.3`, a pseudo-version from a build in a git\n" +
			"checkout), the git commit and whether the checkout had uncommitted changes, and the Go version.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			bi, ok := debug.ReadBuildInfo()
			v := buildVersion(bi, ok)
			if asJSON {
				return json.NewEncoder(c.OutOrStdout()).Encode(v)
			}
			return printVersion(c, v)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printVersion(c *cobra.Command, v versionInfo) error {
	tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "outbox\t%s\n", v.Version)
	switch {
	case v.Commit == "":
		fmt.Fprintf(tw, "commit\tunknown (built outside a git checkout, from a module download, or with -buildvcs=false)\n")
	case v.Modified:
		fmt.Fprintf(tw, "commit\t%s, with uncommitted changes\n", v.Commit)
	default:
		fmt.Fprintf(tw, "commit\t%s\n", v.Commit)
	}
	if v.CommitTime != "" {
		fmt.Fprintf(tw, "committed\t%s\n", v.CommitTime)
	}
	fmt.Fprintf(tw, "go\t%s %s\n", v.Go, v.Platform)
	return tw.Flush()
}
