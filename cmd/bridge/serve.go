package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/bridgemail/bridge/admin"
	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/proxy"
	"github.com/bridgemail/bridge/store"
)

const defaultConfigPath = "/etc/bridge/config.yaml"

func runServe(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "serve", "[--config FILE]")
	configPath := fs.String("config", defaultConfigPath, "configuration `file`")
	if _, err := parseFlags(fs, args, 0); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	log := newLogger(e.stderr, cfg.Log)

	d, err := openDaemon(cfg, log)
	if err != nil {
		return err
	}
	defer d.close()

	if err := d.server.Start(); err != nil {
		return err
	}
	adminServer, err := admin.Listen(cfg.Store.AdminSocket, d.adminHandler(), log)
	if err != nil {
		d.server.Shutdown(context.Background())
		return err
	}
	defer adminServer.Close()
	log.Info("bridge started", "version", versionString(), "config", cfg.Path, "store", cfg.Store.Path)

	<-ctx.Done()
	log.Info("stopping", "grace", cfg.Limits.ShutdownGrace)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Limits.ShutdownGrace)
	defer cancel()
	if err := d.server.Shutdown(shutdownCtx); err != nil {
		log.Warn("sessions still open at the end of the grace period were closed", "err", err)
	}
	log.Info("stopped")
	return nil
}

// daemon is everything serve runs.
type daemon struct {
	cfg       *config.Config
	log       *slog.Logger
	store     *store.Store
	providers map[string]*auth.Provider
	tokens    *auth.Tokens
	server    *proxy.Server
}

func openDaemon(cfg *config.Config, log *slog.Logger) (*daemon, error) {
	key, err := store.LoadOrCreateKey(cfg.Store.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("sealing key: %w", err)
	}
	st, err := store.Open(cfg.Store.Path, key)
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%w: is another bridge serve running with this store?", err)
	}
	if err != nil {
		return nil, err
	}

	providers, err := auth.NewProviders(cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	tokens := auth.NewTokens(st, providers, log)
	tokens.Timeout = cfg.Limits.TokenTimeout
	tokens.SetRefreshAhead(cfg.Pool.RefreshMargin)
	passwords, err := auth.NewPasswordChecker(auth.DefaultCacheTTL)
	if err != nil {
		st.Close()
		return nil, err
	}

	srv, err := proxy.New(proxy.Options{
		Config:    cfg,
		Users:     st,
		Tokens:    tokens,
		Providers: providers,
		Passwords: passwords,
		Log:       log,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	tokens.Start()
	return &daemon{cfg: cfg, log: log, store: st, providers: providers, tokens: tokens, server: srv}, nil
}

func (d *daemon) close() {
	d.tokens.Stop()
	d.store.Close()
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
