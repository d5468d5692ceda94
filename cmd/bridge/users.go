package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/store"
)

func runUsers(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		printUsersUsage(e.stderr)
		return usageError{"missing users command: list, remove or passwd"}
	}
	switch args[0] {
	case "list":
		return runUsersList(ctx, e, args[1:])
	case "remove":
		return runUsersRemove(ctx, e, args[1:])
	case "passwd":
		return runUsersPasswd(ctx, e, args[1:])
	case "-h", "--help", "help":
		printUsersUsage(e.stdout)
		return nil
	}
	printUsersUsage(e.stderr)
	return usageError{fmt.Sprintf("unknown users command %q", args[0])}
}

func printUsersUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: bridge users list [--config FILE]")
	fmt.Fprintln(w, "       bridge users remove USER [--config FILE]")
	fmt.Fprintln(w, "       bridge users passwd USER [--config FILE] [--password-file PATH] [--allow-sender ADDR]... [--any-sender]")
}

// loadUsersConfig parses the flags of a users command and loads the
// configuration.
func loadUsersConfig(fs *flag.FlagSet, args []string, want int) (*config.Config, []string, error) {
	configPath := fs.String("config", defaultConfigPath, "configuration `file`")
	rest, err := parseFlags(fs, args, want)
	if err != nil {
		return nil, nil, err
	}
	for _, name := range rest {
		if err := checkUserName(name); err != nil {
			return nil, nil, usageError{err.Error()}
		}
	}
	cfg, err := config.Load(*configPath)
	return cfg, rest, err
}

func runUsersList(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "users list", "[--config FILE]")
	cfg, _, err := loadUsersConfig(fs, args, 0)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}

	users, err := openUsers(cfg, false)
	if errors.Is(err, errNoStore) {
		fmt.Fprintln(e.stdout, "No users yet; add one with bridge authorize USER.")
		return nil
	}
	if err != nil {
		return err
	}
	defer users.close()
	infos, err := users.list(ctx)
	if err != nil {
		return fmt.Errorf("listing users: %w", err)
	}
	if len(infos) == 0 {
		fmt.Fprintln(e.stdout, "No users yet; add one with bridge authorize USER.")
		return nil
	}
	printUsers(e.stdout, infos)
	return nil
}

func printUsers(w io.Writer, infos []userInfo) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tACCOUNT\tPROVIDER\tCREATED\tLAST USED\tTOKEN\tALLOWED SENDERS")
	for _, u := range infos {
		senders := "any"
		if len(u.AllowedSenders) > 0 {
			senders = strings.Join(u.AllowedSenders, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", u.Name, u.Account, u.Provider,
			formatTime(u.Created), formatTime(u.LastUsed), u.TokenState, senders)
	}
	tw.Flush()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04")
}

func runUsersRemove(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "users remove", "USER [--config FILE]")
	cfg, rest, err := loadUsersConfig(fs, args, 1)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	name := rest[0]

	users, err := openUsers(cfg, false)
	if err != nil {
		return noUser(name, err)
	}
	defer users.close()
	res, err := users.remove(ctx, name)
	if err != nil {
		return noUser(name, err)
	}

	w := e.stdout
	fmt.Fprintf(w, "Removed user %s; its password is rejected from now on.\n", name)
	if res.AccountRemoved {
		fmt.Fprintf(w, "No other user sent as %s, so its refresh token was deleted too.\n", res.Account)
		fmt.Fprintln(w, "The grant stays valid at the provider until it is revoked in the account's security settings.")
	} else {
		fmt.Fprintf(w, "%s keeps its refresh token for %s.\n", res.Account, strings.Join(res.RemainingUsers, ", "))
	}
	fmt.Fprintln(w, users.where())
	return nil
}

func runUsersPasswd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "users passwd", "USER [--config FILE] [--password-file PATH] [--allow-sender ADDR]... [--any-sender]")
	var pf passwordFlags
	pf.register(fs, "without it a password is generated")
	anySender := fs.Bool("any-sender", false, "clear the list of allowed envelope senders")
	cfg, rest, err := loadUsersConfig(fs, args, 1)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	name := rest[0]
	if *anySender && pf.senders != nil {
		return usageError{"--any-sender and --allow-sender exclude each other"}
	}
	if err := pf.validate(); err != nil {
		return err
	}
	pw, err := pf.read(e.stdin)
	if err != nil {
		return err
	}

	req := passwordRequest{PasswordHash: pw.hash}
	switch {
	case *anySender:
		req.AllowedSenders = &[]string{}
	case pf.senders != nil:
		list := []string(pf.senders)
		req.AllowedSenders = &list
	}
	users, err := openUsers(cfg, false)
	if err != nil {
		return noUser(name, err)
	}
	defer users.close()
	if err := users.setPassword(ctx, name, req); err != nil {
		return noUser(name, err)
	}

	w := e.stdout
	if pw.generated {
		printGeneratedPassword(w, name, pw.plain)
	} else {
		fmt.Fprintf(w, "%s has the password from %s.\n", name, pw.source())
	}
	fmt.Fprintf(w, "The old password of %s is rejected from now on.\n", name)
	switch {
	case *anySender:
		fmt.Fprintf(w, "%s may use any envelope sender.\n", name)
	case pf.senders != nil:
		fmt.Fprintf(w, "%s may use only these envelope senders: %s.\n", name, strings.Join(pf.senders, ", "))
	}
	fmt.Fprintln(w, users.where())
	return nil
}

// noUser rewords a missing user or store as a hint.
func noUser(name string, err error) error {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, errNoStore) {
		return fmt.Errorf("no user %s; bridge users list shows the users", name)
	}
	return err
}
