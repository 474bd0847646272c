package outboxcli

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/migrations"
)

type dbFlags struct {
	url         string
	schema      string
	publication string
}

func (f *dbFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.url, "database-url", "", "PostgreSQL connection string (default $DATABASE_URL, then the PG* variables when PGHOST, PGDATABASE, ... is set)")
	c.Flags().StringVar(&f.schema, "schema", "outbox", "schema that holds the outbox tables")
}

// addPublication adds --publication to the commands that use it (not to
// `migrate inbox`, which inherits the other flags).
func (f *dbFlags) addPublication(cmds ...*cobra.Command) {
	for _, c := range cmds {
		c.Flags().StringVar(&f.publication, "publication", "outbox_events", "publication over the events table")
	}
}

// openDB opens a database/sql handle through pgx and checks the connection.
// rawURL is --database-url (or a config's URL); see databaseURL for the
// fallbacks when it is empty.
func openDB(ctx context.Context, rawURL string) (*sql.DB, error) {
	url, err := databaseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, usageErr("pass --database-url postgres://USER:PASSWORD@HOST:5432/DB (or set DATABASE_URL)", "bad database URL: %v", err)
	}
	db := stdlib.OpenDB(*cfg)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, runtimeErr(fmt.Errorf("connect to PostgreSQL at %s:%d: %w", cfg.Host, cfg.Port, err),
			"check --database-url / DATABASE_URL and that PostgreSQL is running")
	}
	return db, nil
}

func (a *app) migrateCmd() *cobra.Command {
	var f dbFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, roll back, show or print the outbox schema migrations",
		Long: "Manage the outbox schema. Migrations run under an advisory lock, so two `outbox migrate up` at once apply each version once.\n" +
			"Use `outbox migrate sql` to apply the schema with your own migration tool instead.",
	}
	f.add(cmd)
	cmd.PersistentFlags().AddFlagSet(cmd.Flags())
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON")

	migrator := func(ctx context.Context) (*migrations.Migrator, func(), error) {
		db, err := openDB(ctx, f.url)
		if err != nil {
			return nil, nil, err
		}
		m, err := migrations.New(db, &migrations.Config{Schema: f.schema, Publication: f.publication})
		if err != nil {
			db.Close()
			return nil, nil, usageErr("", "%v", err)
		}
		return m, func() { db.Close() }, nil
	}
	// withMigrator runs fn with a migrator of the flags' database.
	withMigrator := func(c *cobra.Command, fn func(*migrations.Migrator) error) error {
		m, done, err := migrator(c.Context())
		if err != nil {
			return err
		}
		defer done()
		return fn(m)
	}
	printResults := func(c *cobra.Command, res []migrations.Result, none string) error {
		if asJSON {
			if res == nil {
				res = []migrations.Result{}
			}
			return json.NewEncoder(c.OutOrStdout()).Encode(res)
		}
		if len(res) == 0 {
			fmt.Fprintln(c.OutOrStdout(), none)
		}
		for _, r := range res {
			fmt.Fprintf(c.OutOrStdout(), "%s %d %s (%s)\n", r.Direction, r.Version, r.Name, r.Duration.Round(time.Millisecond))
		}
		return nil
	}

	up := &cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return withMigrator(c, func(m *migrations.Migrator) error {
				res, err := m.Up(c.Context())
				if err != nil {
					return runtimeErr(err, "")
				}
				return printResults(c, res, "already up to date")
			})
		},
	}
	var to int64
	var all bool
	down := &cobra.Command{
		Use:   "down",
		Short: "Roll back the newest migration (or down to --to VERSION, or --all)",
		Long:  "Roll back migrations. Rolling back version 1 drops the events and dead-letter tables: their rows are lost.",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if all && c.Flags().Changed("to") {
				return usageErr("use one of them", "--all and --to conflict")
			}
			if c.Flags().Changed("to") && to < 0 {
				return usageErr("versions start at 1; --to 0 (or --all) rolls back every version", "--to must not be negative, not %d", to)
			}
			return withMigrator(c, func(m *migrations.Migrator) error {
				target := to
				if all {
					target = 0
				} else if !c.Flags().Changed("to") {
					st, err := m.Status(c.Context())
					if err != nil {
						return runtimeErr(err, "")
					}
					target = previousApplied(st)
				}
				if target < 0 {
					return printResults(c, nil, "nothing to roll back")
				}
				res, err := m.Down(c.Context(), target)
				if err != nil {
					return runtimeErr(err, "")
				}
				return printResults(c, res, "nothing to roll back")
			})
		},
	}
	down.Flags().Int64Var(&to, "to", 0, "roll back every version newer than this one")
	down.Flags().BoolVar(&all, "all", false, "roll back every version (drops the outbox tables)")

	status := &cobra.Command{
		Use:   "status",
		Short: "Show which migrations are applied (only reads: creates nothing on a database never migrated)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return withMigrator(c, func(m *migrations.Migrator) error {
				st, err := m.Status(c.Context())
				if err != nil {
					return dbError(err, "") // a role without SELECT on schema_migrations: the grants hint
				}
				if asJSON {
					return json.NewEncoder(c.OutOrStdout()).Encode(st)
				}
				tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED\tAPPLIED AT")
				for _, s := range st {
					at := "-"
					if s.Applied {
						at = s.AppliedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%d\t%s\t%v\t%s\n", s.Version, s.Name, s.Applied, at)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				pending := 0
				for _, s := range st {
					if !s.Applied {
						pending++
					}
				}
				switch {
				case pending == len(st):
					fmt.Fprintf(c.OutOrStdout(), "not migrated: schema %s has none of the %d migrations; apply them with `outbox migrate up`\n", f.schema, pending)
				case pending > 0:
					fmt.Fprintf(c.OutOrStdout(), "%d pending: apply them with `outbox migrate up`\n", pending)
				default:
					fmt.Fprintln(c.OutOrStdout(), "up to date")
				}
				return nil
			})
		},
	}
	var sqlDown bool
	sqlCmd := &cobra.Command{
		Use:   "sql",
		Short: "Print the schema as SQL for other migration tools (needs no database)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := migrations.SQL(&migrations.Config{Schema: f.schema, Publication: f.publication}, sqlDown)
			if err != nil {
				return usageErr("", "%v", err)
			}
			_, err = fmt.Fprint(c.OutOrStdout(), s)
			return err
		},
	}
	sqlCmd.Flags().BoolVar(&sqlDown, "down", false, "print the down migrations instead")
	f.addPublication(up, down, status, sqlCmd)
	cmd.AddCommand(up, down, status, sqlCmd, a.migrateInboxCmd())
	return cmd
}

// previousApplied returns the version to roll back to so that only the newest
// applied version is undone, or -1 when nothing is applied.
func previousApplied(st []migrations.Status) int64 {
	var applied []int64
	for _, s := range st {
		if s.Applied {
			applied = append(applied, s.Version)
		}
	}
	switch len(applied) {
	case 0:
		return -1
	case 1:
		return 0
	}
	return applied[len(applied)-2]
}
