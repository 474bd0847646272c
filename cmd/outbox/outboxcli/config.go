package outboxcli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with relay.yaml"}
	var configPath string
	var connect bool
	check := &cobra.Command{
		Use:   "check --config relay.yaml",
		Short: "Validate the config as the relay does at start-up, without starting it",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			if connect {
				ctx, cancel := context.WithTimeout(c.Context(), 30*time.Second)
				defer cancel()
				logger := slog.New(slog.DiscardHandler)
				sinks, err := buildSinks(ctx, cfg, logger)
				if err != nil {
					return runtimeErr(err, "fix the sink setting the error names (docs/sinks.md), or check that the broker is running and reachable")
				}
				closeSinks(sinks)
				db, err := openDB(ctx, cfg.Database.URL)
				if err != nil {
					return err
				}
				db.Close()
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: ok (%d sinks, %d routes)\n", configPath, len(cfg.Sinks), len(cfg.Routes))
			return nil
		},
	}
	check.Flags().StringVar(&configPath, "config", "relay.yaml", "path of the relay's config file")
	check.Flags().BoolVar(&connect, "connect", false, "also connect to the database and to each sink")
	cmd.AddCommand(check)
	return cmd
}
