package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
)

// authorizeFlags are the flags of bridge authorize.
type authorizeFlags struct {
	config   string
	provider string
	account  string
	port     int
	device   bool
	timeout  time.Duration
	password passwordFlags
}

func runAuthorize(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "authorize", "USER [--provider NAME] [--account EMAIL] [--device] [--password-file PATH] [--allow-sender ADDR]...")
	var f authorizeFlags
	fs.StringVar(&f.config, "config", defaultConfigPath, "configuration `file`")
	fs.StringVar(&f.provider, "provider", "", "`name` of the provider in the configuration; defaults to the only one configured")
	fs.StringVar(&f.account, "account", "", "`address` to send as: sent as login_hint, and consent for another account is rejected")
	fs.IntVar(&f.port, "port", 0, "`port` on 127.0.0.1 that the browser is redirected to; 0 picks a free one")
	fs.BoolVar(&f.device, "device", false, "use the device authorization grant: enter a code on any device instead of a redirect (Microsoft only)")
	fs.DurationVar(&f.timeout, "timeout", auth.DefaultConsentTimeout, "how long to wait for the consent")
	f.password.register(fs, "a new user gets a generated password; an existing one keeps its password")
	rest, err := parseFlags(fs, args, 1)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	name := rest[0]
	if err := f.validate(name); err != nil {
		return err
	}

	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	providerName, err := chooseProvider(cfg, f.provider)
	if err != nil {
		return err
	}
	provider, err := auth.NewProvider(providerName, cfg.Providers[providerName])
	if err != nil {
		return err
	}
	pw, err := f.password.read(e.stdin)
	if err != nil {
		return err
	}

	// Find out before the consent whether the store can be written, so
	// the admin does not consent for nothing.
	users, err := openUsers(cfg, true)
	if err != nil {
		return err
	}
	users.close()

	grant, err := consent(ctx, e, cfg, provider, f)
	if err != nil {
		return fmt.Errorf("authorizing %s: %w; nothing was stored", name, err)
	}
	return storeGrant(ctx, e, cfg, name, providerName, grant, pw, f.password.senders)
}

func (f *authorizeFlags) validate(name string) error {
	if err := checkUserName(name); err != nil {
		return usageError{err.Error()}
	}
	if f.account != "" {
		if a, err := mail.ParseAddress(f.account); err != nil || a.Address != f.account {
			return usageError{fmt.Sprintf("invalid --account %q: expected a plain address such as scanner@example.com", f.account)}
		}
	}
	if f.port < 0 || f.port > 65535 {
		return usageError{fmt.Sprintf("invalid --port %d: expected 0 to 65535", f.port)}
	}
	if f.timeout <= 0 {
		return usageError{fmt.Sprintf("invalid --timeout %s: expected a positive duration such as 10m", f.timeout)}
	}
	return f.password.validate()
}

// chooseProvider returns the provider called name, or the only configured
// one when name is empty.
func chooseProvider(cfg *config.Config, name string) (string, error) {
	names := make([]string, 0, len(cfg.Providers))
	for n := range cfg.Providers {
		names = append(names, n)
	}
	sort.Strings(names)

	switch {
	case name != "":
		if _, ok := cfg.Providers[name]; !ok {
			return "", usageError{fmt.Sprintf("provider %q is not configured in %s; configured: %s",
				name, cfg.Path, strings.Join(names, ", "))}
		}
		return name, nil
	case len(names) == 1:
		return names[0], nil
	case len(names) == 0:
		return "", fmt.Errorf("%s configures no provider; add one under providers", cfg.Path)
	}
	return "", usageError{fmt.Sprintf("%s configures several providers (%s); choose one with --provider",
		cfg.Path, strings.Join(names, ", "))}
}

func consent(ctx context.Context, e env, cfg *config.Config, p *auth.Provider, f authorizeFlags) (*auth.Grant, error) {
	if f.device {
		return p.DeviceConsent(ctx, auth.DeviceOptions{
			Account:    f.account,
			Timeout:    f.timeout,
			Out:        e.stdout,
			HTTPClient: &http.Client{Timeout: cfg.Limits.TokenTimeout},
		})
	}
	opts := auth.ConsentOptions{
		Account:    f.account,
		Port:       f.port,
		Timeout:    f.timeout,
		Out:        e.stdout,
		HTTPClient: &http.Client{Timeout: cfg.Limits.TokenTimeout},
	}
	// Standard input takes the pasted address, unless it carried the
	// password.
	if f.password.file != "-" {
		opts.Paste = e.stdin
	}
	grant, err := p.Consent(ctx, opts)
	if errors.Is(err, auth.ErrConsentTimeout) {
		err = fmt.Errorf("%w; run bridge authorize again, with a longer --timeout if needed", err)
	}
	return grant, err
}

// storeGrant stores the user with the grant and prints what changed.
func storeGrant(ctx context.Context, e env, cfg *config.Config, name, provider string, g *auth.Grant, pw password, senders stringList) error {
	users, err := openUsers(cfg, true)
	if err != nil {
		return fmt.Errorf("storing the grant for %s: %w", name, err)
	}
	defer users.close()

	req := authorizeRequest{
		Provider:     provider,
		Account:      g.Account,
		RefreshToken: g.RefreshToken,
		Scopes:       g.Scopes,
		PasswordHash: pw.hash,
		KeepPassword: pw.generated,
	}
	if senders != nil {
		list := []string(senders)
		req.AllowedSenders = &list
	}
	res, err := users.authorize(ctx, name, req)
	if err != nil {
		return fmt.Errorf("storing the grant for %s: %w", name, err)
	}

	w := e.stdout
	fmt.Fprintf(w, "\nAuthorized user %s to send as %s through provider %s.\n", name, g.Account, provider)
	switch {
	case res.PasswordSet && pw.generated:
		printGeneratedPassword(w, name, pw.plain)
	case res.PasswordSet:
		fmt.Fprintf(w, "%s has the password from %s.\n", name, pw.source())
	default:
		fmt.Fprintf(w, "%s keeps its password; bridge users passwd %s sets a new one.\n", name, name)
	}
	printAuthorizeChanges(w, name, g.Account, res)
	if len(cfg.Listeners) > 0 {
		fmt.Fprintf(w, "Senders log in as %s over SMTP at %s.\n", name, cfg.Listeners[0].Address)
	}
	fmt.Fprintln(w, users.where())
	return nil
}

func printAuthorizeChanges(w io.Writer, name, account string, res authorizeResult) {
	if res.TokenReplaced {
		fmt.Fprintf(w, "The new refresh token replaced the one stored for %s", account)
		if len(res.SharedWith) > 0 {
			fmt.Fprintf(w, "; the other users of that account (%s) use the new one too", strings.Join(res.SharedWith, ", "))
		}
		fmt.Fprintln(w, ".")
	}
	if res.PreviousAccount != "" {
		fmt.Fprintf(w, "%s sent as %s before", name, res.PreviousAccount)
		if res.PreviousAccountRemoved {
			fmt.Fprint(w, "; no other user sends as it, so its refresh token was deleted")
		}
		fmt.Fprintln(w, ".")
	}
	if len(res.AllowedSenders) > 0 {
		fmt.Fprintf(w, "%s may use only these envelope senders: %s.\n", name, strings.Join(res.AllowedSenders, ", "))
	}
}

func printGeneratedPassword(w io.Writer, name, plain string) {
	fmt.Fprintf(w, "The password of %s is shown only this once; enter it in the sender's SMTP settings:\n\n", name)
	fmt.Fprintf(w, "    %s\n\n", plain)
}

// passwordFlags are the password and sender flags of authorize and
// users passwd.
type passwordFlags struct {
	file    string
	senders stringList
}

func (p *passwordFlags) register(fs *flag.FlagSet, defaultHelp string) {
	fs.StringVar(&p.file, "password-file", "",
		"read the local password from `file`, or from standard input for -; "+defaultHelp)
	fs.Var(&p.senders, "allow-sender",
		"envelope sender `address` the user may use in MAIL FROM; repeat for more; without it any sender is allowed")
}

func (p *passwordFlags) validate() error {
	if p.senders != nil {
		if err := checkSenders(p.senders); err != nil {
			return usageError{"--allow-sender: " + err.Error()}
		}
	}
	return nil
}

// password is a local password and its argon2id hash.
type password struct {
	plain     string
	hash      string
	generated bool
	file      string
}

func (p password) source() string {
	if p.file == "-" {
		return "standard input"
	}
	return p.file
}

// maxPasswordBytes bounds local passwords. AUTH PLAIN sends the password
// base64-encoded on one command line, and the SMTP server reads lines of
// up to 2000 characters.
const maxPasswordBytes = 1024

// read returns the password from the file, or a generated one when no
// file was given, with its hash.
func (p *passwordFlags) read(stdin io.Reader) (password, error) {
	pw := password{file: p.file}
	if p.file == "" {
		plain, err := auth.GeneratePassword()
		if err != nil {
			return pw, err
		}
		pw.plain, pw.generated = plain, true
	} else {
		plain, err := readPasswordFile(p.file, stdin)
		if err != nil {
			return pw, err
		}
		pw.plain = plain
	}

	hash, err := auth.HashPassword(pw.plain)
	if err != nil {
		return pw, err
	}
	pw.hash = hash
	return pw, nil
}

// readPasswordFile reads a password from path, or from stdin for "-",
// without one trailing newline.
func readPasswordFile(path string, stdin io.Reader) (string, error) {
	var data []byte
	var err error
	if path == "-" {
		path = "standard input"
		data, err = io.ReadAll(io.LimitReader(stdin, maxPasswordBytes+3))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("reading password: %w", err)
	}

	plain := string(data)
	if s, ok := strings.CutSuffix(plain, "\r\n"); ok {
		plain = s
	} else {
		plain = strings.TrimSuffix(plain, "\n")
	}
	switch {
	case plain == "":
		return "", fmt.Errorf("the password from %s is empty", path)
	case len(plain) > maxPasswordBytes:
		return "", fmt.Errorf("the password from %s is longer than %d bytes", path, maxPasswordBytes)
	case strings.ContainsAny(plain, "\x00\r\n"):
		return "", fmt.Errorf("the password from %s contains a line break or NUL byte, which senders cannot send", path)
	}
	return plain, nil
}

// stringList is a flag that may be repeated. It is nil until the flag is
// given.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}
