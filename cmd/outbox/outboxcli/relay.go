package outboxcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/outboxrelay/outbox/relay"
)

func (a *app) relayCmd() *cobra.Command {
	var configPath string
	var drain time.Duration
	cmd := &cobra.Command{
		Use:   "relay --config relay.yaml",
		Short: "Run the relay: tail the outbox and deliver its events",
		Long: "Run the relay sidecar. It stops cleanly on SIGTERM or SIGINT: it finishes the deliveries in flight\n" +
			"(up to --drain-timeout), confirms its position and exits 0.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if drain < 0 {
				return usageErr("e.g. --drain-timeout 30s", "--drain-timeout must not be negative, not %s", drain)
			}
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			logger, err := a.logger(&cfg.Log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()

			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outbox_build_info", Help: "The relay's version."}, []string{"version"})
			buildInfo.WithLabelValues(Version).Set(1)
			reg.MustRegister(buildInfo)

			sinks, err := buildSinks(ctx, cfg, logger)
			if err != nil {
				return runtimeErr(err, "fix the sink setting the error names (docs/sinks.md), or check that the broker is running and reachable")
			}
			defer closeSinks(sinks)
			tp, shutdownTracing, err := tracerProvider(ctx, logger)
			if err != nil {
				return runtimeErr(err, "check the OTEL_* variables, or unset them to run without tracing")
			}
			if shutdownTracing != nil {
				defer func() {
					sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					shutdownTracing(sctx)
				}()
			}
			opts := &relay.Options{Logger: logger, Registerer: reg, DrainTimeout: drain, Version: Version}
			if tp != nil {
				opts.TracerProvider = tp
			}
			r, err := relay.New(cfg, sinks, opts)
			if err != nil {
				return runtimeErr(err, "")
			}
			if cfg.Admin.Listen != "off" {
				srv, err := startAdmin(cfg.Admin.Listen, reg, r, logger)
				if err != nil {
					return runtimeErr(err, "set admin.listen to a free address, or \"off\"")
				}
				defer srv.Close()
			}
			logger.Info("relay starting", "version", Version, "schema", cfg.Database.Schema, "slot", cfg.Database.Slot, "sinks", len(sinks))
			if err := r.Run(ctx); err != nil {
				var fe *relay.FatalError
				if errors.As(err, &fe) {
					return runtimeErr(err, "")
				}
				return runtimeErr(err, "")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "relay.yaml", "path of the relay's config file")
	cmd.Flags().DurationVar(&drain, "drain-timeout", 30*time.Second, "how long a stopping relay waits for deliveries in flight")
	return cmd
}

// startAdmin serves /metrics, /healthz and /readyz.
func startAdmin(addr string, reg *prometheus.Registry, r *relay.Relay, logger *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 3*time.Second)
		defer cancel()
		h := r.Health(ctx)
		ready := h.Database && h.Active && h.Streaming
		notReady := []string{}
		if !h.Database {
			notReady = append(notReady, "database")
		}
		if !h.Active {
			notReady = append(notReady, "standby")
		} else if !h.Streaming {
			notReady = append(notReady, "slot")
		}
		for name, ok := range h.Sinks {
			if !ok {
				ready = false
				notReady = append(notReady, "sink:"+name)
			}
		}
		body := map[string]any{"ready": ready, "health": h, "not_ready": notReady}
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server stopped", "error", err)
		}
	}()
	logger.Info("admin server listening", "addr", ln.Addr().String())
	return srv, nil
}
