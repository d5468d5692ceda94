package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/admin"
	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/proxy"
	"github.com/bridgemail/bridge/store"
)

func runCheck(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "check", "[--config FILE] [--online]")
	configPath := fs.String("config", defaultConfigPath, "configuration `file`")
	online := fs.Bool("online", false, "also refresh each account's access token and log in to its submission server")
	if _, err := parseFlags(fs, args, 0); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	c := &checker{out: e.stdout, log: newLogger(e.stderr, config.Log{Level: "warn", Format: "text"})}
	if cfg := c.checkConfig(*configPath); cfg != nil {
		c.checkStore(ctx, cfg, *online)
	}
	switch c.problems {
	case 0:
		fmt.Fprintln(c.out, "no problems found")
		return nil
	case 1:
		return errors.New("check found 1 problem")
	}
	return fmt.Errorf("check found %d problems", c.problems)
}

// checker prints what bridge check finds: "ok: ..." lines, and one line
// for each problem, which begins with where it is.
type checker struct {
	out      io.Writer
	log      *slog.Logger
	problems int
}

func (c *checker) ok(format string, args ...any) {
	fmt.Fprintf(c.out, "ok: "+format+"\n", args...)
}

func (c *checker) problem(format string, args ...any) {
	c.problems++
	fmt.Fprintf(c.out, format+"\n", args...)
}

// checkConfig loads the file and the providers it defines. It returns
// nil when either fails.
func (c *checker) checkConfig(path string) *config.Config {
	cfg, err := config.Load(path)
	var problems config.Problems
	if errors.As(err, &problems) {
		for _, p := range problems {
			c.problem("%s", p.Error())
		}
		return nil
	}
	if err != nil {
		c.problem("%s: %v", path, err)
		return nil
	}
	if _, err := auth.NewProviders(cfg); err != nil {
		c.problem("%s: %v", path, err)
		return nil
	}
	c.ok("config %s", path)
	return cfg
}

// checkStore checks the store through the running server, or opens it
// itself when none runs.
func (c *checker) checkStore(ctx context.Context, cfg *config.Config, online bool) {
	client, err := admin.Dial(cfg.Store.AdminSocket)
	if err == nil {
		c.checkThroughServer(ctx, client, cfg, online)
		return
	}
	if !errors.Is(err, admin.ErrNotRunning) {
		c.problem("admin socket %s: %v", cfg.Store.AdminSocket, err)
		return
	}

	st, ok := c.openStore(cfg, online)
	if !ok {
		return
	}
	defer st.Close()
	report, err := readStoreReport(st)
	if err != nil {
		c.problem("store %s: %v", cfg.Store.Path, err)
		return
	}
	report.Path = cfg.Store.Path
	c.reportStore(report, cfg, "no bridge serve is running")
	if !online {
		return
	}

	providers, err := auth.NewProviders(cfg)
	if err != nil {
		c.problem("%s: %v", cfg.Path, err)
		return
	}
	tokens := auth.NewTokens(st, providers, c.log)
	tokens.Timeout = cfg.Limits.TokenTimeout
	c.reportOnline(checkAccounts(ctx, report, func(ctx context.Context, provider, account string) (time.Time, error) {
		p, ok := providers[provider]
		if !ok {
			return time.Time{}, fmt.Errorf("provider %q is not configured", provider)
		}
		return proxy.CheckAccount(ctx, proxy.CheckOptions{
			Tokens: tokens, Provider: p, Account: account, Limits: cfg.Limits, Log: c.log,
		})
	}))
}

func (c *checker) checkThroughServer(ctx context.Context, client *admin.Client, cfg *config.Config, online bool) {
	var status statusReply
	if err := client.Call(ctx, http.MethodGet, "/v1/status", nil, &status); err != nil {
		c.problem("admin socket %s: %v", cfg.Store.AdminSocket, err)
		return
	}
	where := fmt.Sprintf("through the running bridge serve (pid %d)", status.PID)
	if !samePath(status.Config, cfg.Path) {
		fmt.Fprintf(c.out, "note: the running server uses %s; the store and online checks use that server's configuration\n", status.Config)
	}

	var report storeReport
	if err := client.Call(ctx, http.MethodGet, "/v1/check/store", nil, &report); err != nil {
		c.problem("store %s: %v", cfg.Store.Path, err)
		return
	}
	c.reportStore(report, cfg, where)
	if !online {
		return
	}
	var results []onlineResult
	if err := client.Call(ctx, http.MethodPost, "/v1/check/online", nil, &results); err != nil {
		c.problem("online check through the running server: %v", err)
		return
	}
	c.reportOnline(results)
}

func samePath(a, b string) bool {
	absA, errA := filepath.Abs(a)
	absB, errB := filepath.Abs(b)
	return errA == nil && errB == nil && absA == absB
}

// openStore opens the store when no server runs: read-only, or for an
// online check read-write, because a refresh may rotate a refresh token
// that must then be saved. A store that does not exist yet is no
// problem, since bridge serve creates it.
func (c *checker) openStore(cfg *config.Config, online bool) (*store.Store, bool) {
	path := cfg.Store.Path
	key, err := store.LoadKey(cfg.Store.KeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		if _, statErr := os.Stat(path); errors.Is(statErr, fs.ErrNotExist) {
			c.ok("store %s does not exist yet; bridge serve creates it and the key file %s", path, cfg.Store.KeyFile)
			return nil, false
		}
		c.problem("store %s: key file %s is missing, so the refresh tokens cannot be opened", path, cfg.Store.KeyFile)
		return nil, false
	}
	if err != nil {
		c.problem("store %s: %v", path, err)
		return nil, false
	}

	var st *store.Store
	if online {
		st, err = store.Open(path, key)
	} else {
		st, err = store.OpenReadOnly(path, key)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.ok("store %s does not exist yet; bridge serve creates it", path)
		return nil, false
	case errors.Is(err, store.ErrLocked):
		c.problem("store %s is open in another process, but no bridge serve answers on %s", path, cfg.Store.AdminSocket)
		return nil, false
	case err != nil:
		c.problem("store %s: %v", path, err)
		return nil, false
	}
	return st, true
}

// storeReport is the part of the store that a check needs, as GET
// /v1/check/store returns it.
type storeReport struct {
	Path     string         `json:"path"`
	Users    []storeUser    `json:"users"`
	Accounts []storeAccount `json:"accounts"`
}

type storeUser struct {
	Name     string `json:"name"`
	Account  string `json:"account"`
	Provider string `json:"provider"`
}

type storeAccount struct {
	Address  string   `json:"address"`
	Provider string   `json:"provider"`
	Scopes   []string `json:"scopes"`
	// TokenError is the error from opening the sealed refresh token, or
	// empty when it opens.
	TokenError string `json:"token_error,omitempty"`
}

// readStoreReport reads every user and account, and opens each sealed
// refresh token to prove that the key file fits.
func readStoreReport(st *store.Store) (storeReport, error) {
	report := storeReport{Users: []storeUser{}, Accounts: []storeAccount{}}
	users, err := st.Users()
	if err != nil {
		return report, err
	}
	for _, u := range users {
		report.Users = append(report.Users, storeUser{Name: u.Name, Account: u.Account, Provider: u.Provider})
	}
	accounts, err := st.Accounts()
	if err != nil {
		return report, err
	}
	for _, a := range accounts {
		sa := storeAccount{Address: a.Address, Provider: a.Provider, Scopes: a.Scopes}
		if _, err := st.Account(a.Address); err != nil {
			sa.TokenError = err.Error()
		}
		report.Accounts = append(report.Accounts, sa)
	}
	return report, nil
}

func (c *checker) reportStore(r storeReport, cfg *config.Config, where string) {
	c.ok("store %s, %s: %s, %s", r.Path, where, plural(len(r.Users), "user"), plural(len(r.Accounts), "account"))
	if len(r.Users) == 0 {
		fmt.Fprintln(c.out, "note: no users yet; add one with bridge authorize USER")
	}
	accounts := make(map[string]storeAccount, len(r.Accounts))
	for _, a := range r.Accounts {
		accounts[a.Address] = a
	}
	for _, u := range r.Users {
		if _, ok := cfg.Providers[u.Provider]; !ok {
			c.problem("user %s: provider %q is not in %s; add it, or run bridge authorize %s with another provider",
				u.Name, u.Provider, cfg.Path, u.Name)
		}
		if _, ok := accounts[u.Account]; !ok {
			c.problem("user %s: account %s has no stored refresh token; run bridge authorize %s", u.Name, u.Account, u.Name)
		}
	}
	for _, a := range r.Accounts {
		users := storeUsersOf(r.Users, a.Address)
		if a.TokenError != "" {
			c.problem("account %s: %s; check store.key_file", a.Address, a.TokenError)
		}
		if p, ok := cfg.Providers[a.Provider]; ok && len(a.Scopes) > 0 && !slices.Contains(a.Scopes, mailScope(p)) {
			c.problem("account %s: the consent lacks scope %s; run bridge authorize %s", a.Address, mailScope(p), firstOr(users, "USER"))
		}
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func mailScope(p config.Provider) string {
	if p.Kind == config.KindMicrosoft {
		return config.MicrosoftSMTPScope
	}
	return config.GoogleMailScope
}

func storeUsersOf(users []storeUser, account string) []string {
	var names []string
	for _, u := range users {
		if u.Account == account {
			names = append(names, u.Name)
		}
	}
	return names
}

func firstOr(names []string, fallback string) string {
	if len(names) == 0 {
		return fallback
	}
	return names[0]
}

// onlineResult is the outcome of the online check of one account, as
// POST /v1/check/online returns it.
type onlineResult struct {
	Account     string    `json:"account"`
	Provider    string    `json:"provider"`
	TokenExpiry time.Time `json:"token_expiry,omitzero"`
	// Problem is empty when the refresh and the login succeeded.
	Problem string `json:"problem,omitempty"`
}

type checkFunc func(ctx context.Context, provider, account string) (time.Time, error)

// checkAccounts runs check for each account of the report, one after the
// other.
func checkAccounts(ctx context.Context, r storeReport, check checkFunc) []onlineResult {
	results := []onlineResult{}
	for _, a := range r.Accounts {
		res := onlineResult{Account: a.Address, Provider: a.Provider}
		expiry, err := check(ctx, a.Provider, a.Address)
		res.TokenExpiry = expiry
		if err != nil {
			res.Problem = describeCheckError(err, a.Provider, storeUsersOf(r.Users, a.Address))
		}
		results = append(results, res)
	}
	return results
}

// describeCheckError returns what failed, followed by the fix.
func describeCheckError(err error, provider string, users []string) string {
	var (
		consent  *auth.ConsentError
		tokenErr *auth.TokenError
		reply    *smtp.SMTPError
	)
	user := firstOr(users, "USER")
	switch {
	case errors.As(err, &consent):
		return fmt.Sprintf("%v; run bridge authorize %s", consent, user)
	case errors.As(err, &tokenErr) && tokenErr.Temporary:
		return fmt.Sprintf("%v; the token endpoint may be down or unreachable, try again later", err)
	case errors.As(err, &tokenErr):
		return fmt.Sprintf("%v; check client_id and client_secret of provider %s", err, provider)
	case errors.As(err, &reply) && reply.Code == 535:
		return fmt.Sprintf("%v; check that the account may use SMTP, then run bridge authorize %s", err, user)
	}
	return err.Error()
}

func (c *checker) reportOnline(results []onlineResult) {
	for _, r := range results {
		if r.Problem != "" {
			c.problem("account %s: %s", r.Account, oneLine(r.Problem))
			continue
		}
		c.ok("account %s: access token refreshed, valid until %s; the submission server accepted XOAUTH2",
			r.Account, r.TokenExpiry.Local().Format(time.DateTime))
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
