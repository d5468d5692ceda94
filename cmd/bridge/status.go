package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bridgemail/bridge/admin"
	"github.com/bridgemail/bridge/config"
)

func runStatus(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "status", "[--config FILE | --socket PATH] [--json]")
	configPath := fs.String("config", defaultConfigPath, "configuration `file`, which names the admin socket")
	socket := fs.String("socket", "", "admin socket `path`, instead of the one in the configuration")
	asJSON := fs.Bool("json", false, "print the server's reply as JSON")
	if _, err := parseFlags(fs, args, 0); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	path := *socket
	if path == "" {
		cfg, err := config.Load(*configPath)
		if err != nil {
			return fmt.Errorf("finding the admin socket in %s (or pass --socket): %w", *configPath, err)
		}
		path = cfg.Store.AdminSocket
	}
	client, err := admin.Dial(path)
	if err != nil {
		return err
	}
	var st statusReply
	if err := client.Call(ctx, http.MethodGet, "/v1/status", nil, &st); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(e.stdout, st, time.Now())
	return nil
}

// printStatus writes the status as text, with times relative to now.
func printStatus(w io.Writer, st statusReply, now time.Time) {
	fmt.Fprintf(w, "bridge %s, pid %d, up %s since %s\n", st.Version, st.PID,
		(time.Duration(st.UptimeSeconds) * time.Second).String(), st.Started.Local().Format(time.DateTime))
	fmt.Fprintf(w, "config %s\n", st.Config)
	fmt.Fprintf(w, "sessions: %d\n", st.Sessions)

	fmt.Fprintln(w, "\nlisteners:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, l := range st.Listeners {
		fmt.Fprintf(tw, "  %s\ttls %s\t%d connections\n", l.Address, l.TLS, l.Connections)
	}
	tw.Flush()

	fmt.Fprintln(w, "\naccounts:")
	if len(st.Accounts) == 0 {
		fmt.Fprintln(w, "  none; add a user with bridge authorize USER")
	}
	for _, a := range st.Accounts {
		fmt.Fprintf(w, "  %s (provider %s; users %s)\n", a.Account, a.Provider, strings.Join(a.Users, ", "))
		tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
		fmt.Fprintf(tw, "    consent:\t%s\n", a.Consent)
		fmt.Fprintf(tw, "    last refresh:\t%s\n", when(a.LastRefresh, now, "none since start"))
		fmt.Fprintf(tw, "    token expiry:\t%s\n", when(a.TokenExpiry, now, "no access token cached"))
		fmt.Fprintf(tw, "    last message:\t%s\n", when(a.LastSent, now, "none since start"))
		fmt.Fprintf(tw, "    sent since start:\t%d\n", a.Sent)
		lastError := "none since start"
		if a.LastError != "" {
			lastError = a.LastError + " (" + when(a.LastErrorAt, now, "") + ")"
		}
		fmt.Fprintf(tw, "    last error:\t%s\n", lastError)
		if a.TokenError != "" {
			fmt.Fprintf(tw, "    token error:\t%s\n", a.TokenError)
		}
		tw.Flush()
	}
}

// when formats t with its distance from now, or returns none for a zero
// time.
func when(t, now time.Time, none string) string {
	if t.IsZero() {
		return none
	}
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	if d < 0 {
		rel = (-d).String() + " ago"
	}
	return t.Local().Format(time.DateTime) + ", " + rel
}
