package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bridgemail/bridge/admin"
	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/internal/sdnotify"
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
	level := new(slog.LevelVar)
	level.UnmarshalText([]byte(cfg.Log.Level))
	log := newLevelLogger(e.stderr, cfg.Log.Format, level)
	notifier, err := sdnotify.FromEnv()
	if err != nil {
		log.Warn("not reporting to systemd", "err", err)
	}
	// SIGHUP must not end the process once systemd may send it, which is
	// as soon as the service reports READY=1.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d, err := openDaemon(cfg, log)
	if err != nil {
		return err
	}
	defer d.close()
	d.configPath, d.level, d.notifier = *configPath, level, notifier

	if err := d.server.Start(); err != nil {
		return err
	}
	adminServer, err := admin.Listen(cfg.Store.AdminSocket, d.adminHandler(), log)
	if err != nil {
		d.server.Shutdown(context.Background())
		return err
	}
	defer adminServer.Close()
	log.Info("bridge started", "version", versionString(), "pid", os.Getpid(), "config", cfg.Path,
		"store", cfg.Store.Path, "admin_socket", cfg.Store.AdminSocket)
	d.notify(d.notifier.Ready(d.statusLine()))

	return d.run(ctx, hup)
}

// daemon is everything serve runs.
type daemon struct {
	log    *slog.Logger
	store  *store.Store
	tokens *auth.Tokens
	server *proxy.Server

	configPath string
	started    time.Time
	// level is the log level, which a reload changes.
	level    *slog.LevelVar
	notifier *sdnotify.Notifier
	// current is the configuration in effect and its providers, which a
	// reload replaces as one.
	current atomic.Pointer[daemonConfig]
}

type daemonConfig struct {
	cfg       *config.Config
	providers map[string]*auth.Provider
}

// config returns the configuration in effect.
func (d *daemon) config() *config.Config { return d.current.Load().cfg }

// providers returns the providers of the configuration in effect.
func (d *daemon) providers() map[string]*auth.Provider { return d.current.Load().providers }

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
	d := &daemon{log: log, store: st, tokens: tokens, server: srv, started: time.Now()}
	d.current.Store(&daemonConfig{cfg: cfg, providers: providers})
	return d, nil
}

func (d *daemon) close() {
	d.tokens.Stop()
	d.store.Close()
}

// newLogger returns a logger with the level and format of c.
func newLogger(w io.Writer, c config.Log) *slog.Logger {
	level := new(slog.LevelVar)
	level.UnmarshalText([]byte(c.Level))
	return newLevelLogger(w, c.Format, level)
}

// newLevelLogger returns a text or JSON logger whose level follows level.
func newLevelLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
