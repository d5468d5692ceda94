package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/internal/sdnotify"
)

// run serves until ctx ends, which SIGINT and SIGTERM do, reloading the
// configuration on each signal from hup and keeping systemd's watchdog
// fed, and then stops gracefully.
func (d *daemon) run(ctx context.Context, hup <-chan os.Signal) error {
	interval, err := sdnotify.WatchdogInterval()
	if err != nil {
		d.log.Warn("systemd watchdog off", "err", err)
	}
	var watchdog <-chan time.Time
	if interval > 0 && d.notifier != nil {
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		watchdog = ticker.C
		d.log.Info("feeding systemd watchdog", "interval", interval)
	}

	for {
		select {
		case <-ctx.Done():
			d.stop(context.Cause(ctx), watchdog)
			return nil
		case <-hup:
			d.reload()
		case <-watchdog:
			d.notify(d.notifier.Watchdog())
		}
	}
}

// stop shuts the server down within the grace period. The watchdog stays
// fed meanwhile, in case systemd still checks it while the service stops.
func (d *daemon) stop(cause error, watchdog <-chan time.Time) {
	grace := d.config().Limits.ShutdownGrace
	d.log.Info("stopping", "cause", cause, "grace", grace, "sessions", d.server.Sessions())
	d.notify(d.notifier.Stopping("stopping: finishing transactions in flight"))

	stopFeeding, fed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(fed)
		for {
			select {
			case <-stopFeeding:
				return
			case <-watchdog:
				d.notify(d.notifier.Watchdog())
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := d.server.Shutdown(ctx)
	close(stopFeeding)
	<-fed
	if err != nil {
		d.log.Warn("grace period over; transactions still in flight were aborted with a 4xx reply", "grace", grace)
	}
	d.log.Info("stopped")
}

// reload loads the configuration file again and applies it. An invalid
// file, or one whose listeners cannot open, changes nothing, and the log
// gives the reason.
func (d *daemon) reload() {
	d.notify(d.notifier.Reloading())
	defer func() { d.notify(d.notifier.Ready(d.statusLine())) }()
	d.log.Info("reloading configuration", "config", d.configPath)

	cfg, err := config.Load(d.configPath)
	if err != nil {
		d.rejectReload(err)
		return
	}
	old := d.current.Load()
	d.keepRestartOnly(old.cfg, cfg)
	providers, err := auth.NewProviders(cfg)
	if err != nil {
		d.rejectReload(err)
		return
	}

	// The token cache gets the providers first, so that no session finds
	// a provider that the cache does not have yet.
	d.tokens.Reconfigure(providers, cfg.Limits.TokenTimeout)
	if err := d.server.Reload(cfg, providers); err != nil {
		d.tokens.Reconfigure(old.providers, old.cfg.Limits.TokenTimeout)
		d.rejectReload(err)
		return
	}
	d.tokens.SetRefreshAhead(cfg.Pool.RefreshMargin)
	d.level.UnmarshalText([]byte(cfg.Log.Level))
	d.current.Store(&daemonConfig{cfg: cfg, providers: providers})
	d.log.Info("configuration reloaded", "config", d.configPath, "listeners", len(cfg.Listeners),
		"providers", len(providers), "log_level", cfg.Log.Level)
}

func (d *daemon) rejectReload(err error) {
	var problems config.Problems
	if errors.As(err, &problems) {
		for _, p := range problems {
			d.log.Error("invalid configuration", "problem", p.Error())
		}
		d.log.Error("reload rejected; the running configuration stays in effect",
			"config", d.configPath, "problems", len(problems))
		return
	}
	d.log.Error("reload rejected; the running configuration stays in effect", "config", d.configPath, "err", err)
}

// keepRestartOnly copies into next the settings that only a restart
// changes, and logs each that differs, so that next describes what is in
// effect.
func (d *daemon) keepRestartOnly(running, next *config.Config) {
	for _, s := range []struct {
		key      string
		old, new string
		keep     func()
	}{
		{"store.path", running.Store.Path, next.Store.Path, func() { next.Store.Path = running.Store.Path }},
		{"store.key_file", running.Store.KeyFile, next.Store.KeyFile, func() { next.Store.KeyFile = running.Store.KeyFile }},
		{"store.admin_socket", running.Store.AdminSocket, next.Store.AdminSocket, func() { next.Store.AdminSocket = running.Store.AdminSocket }},
		{"log.format", running.Log.Format, next.Log.Format, func() { next.Log.Format = running.Log.Format }},
	} {
		if s.old != s.new {
			d.log.Warn(s.key+" changed; restart bridge serve to apply it", "running", s.old, "configured", s.new)
			s.keep()
		}
	}
}

// notify logs a failure to reach systemd.
func (d *daemon) notify(err error) {
	if err != nil {
		d.log.Warn("notifying systemd", "err", err)
	}
}

// statusLine returns the STATUS= line for systemctl status.
func (d *daemon) statusLine() string {
	var addrs []string
	for _, l := range d.server.Status().Listeners {
		addrs = append(addrs, l.Address+" ("+l.TLS+")")
	}
	return fmt.Sprintf("serving on %s", strings.Join(addrs, ", "))
}
