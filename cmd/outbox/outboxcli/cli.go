// Package outboxcli is the `outbox` command line: migrations, the relay, and
// operator tools. It is importable so that programs can embed the commands;
// cmd/outbox only calls Main.
package outboxcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/internal/didyoumean"
	"github.com/outboxrelay/outbox/relay"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // a runtime failure
	ExitUsage   = 2 // bad usage or bad configuration
)

// Version is set at build time with -ldflags "-X .../outboxcli.Version=v1.2.3".
var Version = "dev"

// exitError carries an exit code and a hint line for the user.
type exitError struct {
	code int
	err  error
	hint string
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(hint string, format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...), hint: hint}
}

func runtimeErr(err error, hint string) error {
	return &exitError{code: ExitFailure, err: err, hint: hint}
}

type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	logFormat      string
	logLevel       string
}

// Main runs the command line with args (without the program name) and returns
// the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx := context.Background()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := ExitFailure
	var ee *exitError
	var ce *relay.ConfigError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.As(err, &ce):
		code = ExitUsage
	case isUsageError(err):
		code = ExitUsage
	}
	msg := err.Error()
	fmt.Fprintf(stderr, "outbox: %s\n", strings.ReplaceAll(msg, "\n", "\n  "))
	if ee != nil && ee.hint != "" {
		fmt.Fprintf(stderr, "hint: %s\n", ee.hint)
	} else if code == ExitUsage && ce == nil {
		fmt.Fprintln(stderr, "hint: run `outbox help` or `outbox COMMAND --help` for usage")
	}
	return code
}

// isUsageError recognises cobra's own errors for unknown commands and flags.
func isUsageError(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument",
		"invalid argument", "accepts ", "requires at least", "requires at most", "if any flags in the group", "none of the others can be"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "outbox",
		Short:         "Transactional outbox relay for PostgreSQL",
		Long:          "outbox relays events written to a PostgreSQL outbox table, through logical replication, to Kafka, NATS JetStream, RabbitMQ, Redis Streams or stdout.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.PersistentPreRunE = func(c *cobra.Command, _ []string) error { return checkDatabaseURLFlag(c) }
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErr(fmt.Sprintf("run `%s --help` for the flags", c.CommandPath()), "%v", err)
	})
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "", "log format: json or text (default from the config, else json)")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "", "log level: debug, info, warn, error (default from the config, else info)")
	root.AddCommand(a.migrateCmd(), a.relayCmd(), a.configCmd(), a.dlqCmd(), a.statusCmd(), a.pruneCmd(), a.eventsCmd(), a.versionCmd())
	requireSubcommand(root)
	return root
}

// logger builds the process logger from flags, falling back to the config.
func (a *app) logger(cfg *relay.LogConfig) (*slog.Logger, error) {
	format, level := a.logFormat, a.logLevel
	if cfg != nil {
		if format == "" {
			format = cfg.Format
		}
		if level == "" {
			level = cfg.Level
		}
	}
	lv, err := relay.ParseLevel(level)
	if err != nil {
		return nil, usageErr("", "--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "json":
		return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	}
	return nil, usageErr("", "--log-format must be json or text, not %q", format)
}

// libpqTargetVars are the PG* variables that say which database to connect
// to: one of them set (not empty) asks for libpq's environment defaults when
// neither --database-url nor DATABASE_URL is given.
var libpqTargetVars = []string{"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"}

// databaseURL picks the connection string: the --database-url flag, else
// DATABASE_URL, else "" (pgx then reads the PG* variables) when one of
// libpqTargetVars is set. With none of them, or with DATABASE_URL set but
// empty, it is a usage error naming them: never a silent connection to
// whichever database libpq picks on the local socket. An explicitly empty
// --database-url is refused before, by checkDatabaseURLFlag.
func databaseURL(flag string) (string, error) {
	if strings.TrimSpace(flag) != "" {
		return flag, nil
	}
	const hint = "pass --database-url postgres://USER:PASSWORD@HOST:5432/DB or set DATABASE_URL " +
		"(the operator commands also take --config relay.yaml); to use libpq's defaults, set PGHOST or PGDATABASE"
	if v, ok := os.LookupEnv("DATABASE_URL"); ok {
		if strings.TrimSpace(v) == "" {
			return "", usageErr(hint, "DATABASE_URL is set but empty, and --database-url is not given: no database to connect to")
		}
		return v, nil
	}
	for _, name := range libpqTargetVars {
		if os.Getenv(name) != "" {
			return "", nil
		}
	}
	return "", usageErr(hint, "no database: pass --database-url or set DATABASE_URL (neither is set, nor any of %s)", strings.Join(libpqTargetVars, ", "))
}

// checkDatabaseURLFlag refuses an explicitly empty --database-url (a script's
// unset variable, say): it would otherwise fall back to DATABASE_URL or libpq's
// defaults, a database the user did not name.
func checkDatabaseURLFlag(c *cobra.Command) error {
	fl := c.Flags().Lookup("database-url")
	if fl == nil || !fl.Changed || strings.TrimSpace(fl.Value.String()) != "" {
		return nil
	}
	return usageErr("pass a connection string such as postgres://USER:PASSWORD@HOST:5432/DB, or leave the flag out to use DATABASE_URL",
		"--database-url is empty")
}

// requireSubcommand makes every command that only groups subcommands reject
// an unknown one with exit 2 (cobra would print help and exit 0).
func requireSubcommand(c *cobra.Command) {
	for _, sub := range c.Commands() {
		requireSubcommand(sub)
	}
	if c.HasParent() && c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				var names []string
				for _, sub := range c.Commands() {
					if sub.IsAvailableCommand() {
						names = append(names, sub.Name())
					}
				}
				msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
				if s := didyoumean.Suggest(args[0], names); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				return usageErr(fmt.Sprintf("run `%s --help`; commands: %s", c.CommandPath(), strings.Join(names, ", ")), "%s", msg)
			}
			return c.Help()
		}
	}
}
