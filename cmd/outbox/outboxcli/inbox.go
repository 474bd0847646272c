package outboxcli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/sdk/inbox"
	"github.com/outboxrelay/outbox/sdk/outboxschema"
)

// migrateInboxCmd is `outbox migrate inbox`: the consumer side's table. It
// reads --database-url, --schema and --json from the migrate command's
// persistent flags.
func (a *app) migrateInboxCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inbox",
		Short: "Install the inbox table (sdk/inbox) into a consumer's database",
		Long: "The inbox records which events a consumer has processed, so sdk/inbox.Handle applies each event once.\n" +
			"It lives in the consumer's database (--database-url), in --schema (default outbox), and is independent\n" +
			"of the outbox tables: a consumer database needs only this.",
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return c.Help()
			}
			return usageErr("run `outbox migrate inbox --help`", "unknown command %q for %q (valid: up, sql)", args[0], c.CommandPath())
		},
	}
	config := func(c *cobra.Command) (*inbox.Config, error) {
		schema := c.Flag("schema").Value.String()
		if err := outboxschema.ValidateName("--schema", schema); err != nil {
			return nil, usageErr("", "%v", err)
		}
		return &inbox.Config{Schema: schema}, nil
	}
	up := &cobra.Command{
		Use:   "up",
		Short: "Create the inbox table if it does not exist (idempotent, safe when run concurrently)",
		Example: `  outbox migrate inbox up --database-url "$CONSUMER_DATABASE_URL"
  outbox migrate inbox up --schema shipping --json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := config(c)
			if err != nil {
				return err
			}
			ib, err := inbox.New(cfg)
			if err != nil {
				return usageErr("", "%v", err)
			}
			db, err := openDB(c.Context(), c.Flag("database-url").Value.String())
			if err != nil {
				return err
			}
			defer db.Close()
			table := outboxschema.Quote(cfg.Schema) + "." + inbox.Table
			var existed bool
			if err := db.QueryRowContext(c.Context(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&existed); err != nil {
				return runtimeErr(err, "")
			}
			if err := ib.Migrate(c.Context(), db); err != nil {
				return runtimeErr(err, "the database user needs CREATE on the database (for the schema) or on the schema")
			}
			if c.Flag("json").Value.String() == "true" {
				return json.NewEncoder(c.OutOrStdout()).Encode(map[string]any{"schema": cfg.Schema, "table": inbox.Table, "created": !existed})
			}
			if existed {
				fmt.Fprintf(c.OutOrStdout(), "inbox %s already exists\n", table)
			} else {
				fmt.Fprintf(c.OutOrStdout(), "created inbox %s\n", table)
			}
			return nil
		},
	}
	var down bool
	sqlCmd := &cobra.Command{
		Use:   "sql",
		Short: "Print the inbox table's SQL for other migration tools (needs no database)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := config(c)
			if err != nil {
				return err
			}
			upSQL, downSQL, err := inbox.SQL(cfg)
			if err != nil {
				return usageErr("", "%v", err)
			}
			s := upSQL
			if down {
				s = downSQL
			}
			_, err = fmt.Fprint(c.OutOrStdout(), s)
			return err
		},
	}
	sqlCmd.Flags().BoolVar(&down, "down", false, "print the statement that drops the inbox table instead")
	cmd.AddCommand(up, sqlCmd)
	return cmd
}
