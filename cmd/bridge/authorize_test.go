package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakeoauth"
	"github.com/bridgemail/bridge/store"
)

func TestAuthorizeFollowingRedirect(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	c := start(t, "authorize", "printer", "--config", env.ConfigPath, "--account", "scanner@example.com")

	u := c.consentURL(t, env)
	status, page := browse(t, u)
	if err := c.wait(t); err != nil {
		t.Fatalf("authorize: %v\n%s", err, c.stdout.String())
	}
	out := c.stdout.String()
	if status != http.StatusOK || !strings.Contains(page, "scanner@example.com") || !strings.Contains(page, "close this window") {
		t.Errorf("loopback page = %d %q", status, page)
	}
	if !strings.Contains(out, "ssh -L ") {
		t.Errorf("output lacks the ssh -L line:\n%s", out)
	}
	if got := env.OAuth.LoginHint(); got != "scanner@example.com" {
		t.Errorf("login_hint = %q", got)
	}
	pw := printedPassword(t, out)
	if !strings.Contains(out, "No bridge serve is running") {
		t.Errorf("output does not say that the store was written directly:\n%s", out)
	}

	readStore(t, env, func(st *store.Store) {
		u, err := st.User("printer")
		if err != nil {
			t.Fatal(err)
		}
		if u.Account != "scanner@example.com" || u.Provider != env.Provider {
			t.Errorf("user = %+v", u)
		}
		if strings.Contains(u.PasswordHash, pw) || !strings.HasPrefix(u.PasswordHash, "$argon2id$") {
			t.Errorf("stored password hash %q is not an argon2id hash", u.PasswordHash)
		}
		if !passwordMatches(t, st, "printer", pw) {
			t.Error("printed password does not match the stored hash")
		}
		a, err := st.Account("scanner@example.com")
		if err != nil {
			t.Fatal(err)
		}
		if a.RefreshToken == "" || !slices.Contains(a.Scopes, fakeoauth.GoogleMailScope) {
			t.Errorf("account = %+v", a)
		}
	})
}

func TestAuthorizePastedAddress(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	c := start(t, "authorize", "printer", "--config", env.ConfigPath)

	target := redirectTarget(t, c.consentURL(t, env))
	if !strings.HasPrefix(target, "http://127.0.0.1:") {
		t.Fatalf("redirect target %q is not the loopback listener", target)
	}
	io.WriteString(c.stdin, target+"\n")
	if err := c.wait(t); err != nil {
		t.Fatalf("authorize: %v\n%s", err, c.stdout.String())
	}
	pw := printedPassword(t, c.stdout.String())

	readStore(t, env, func(st *store.Store) {
		u, err := st.User("printer")
		if err != nil {
			t.Fatal(err)
		}
		if u.Account != fakeoauth.DefaultEmail {
			t.Errorf("account = %q, expected %q", u.Account, fakeoauth.DefaultEmail)
		}
		if !passwordMatches(t, st, "printer", pw) {
			t.Error("printed password does not match the stored hash")
		}
	})
}

func TestAuthorizeRejectedWritesNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		consent fakeoauth.Consent
		email   string
		args    []string
		message string
	}{
		{name: "state mismatch", consent: fakeoauth.Consent{TamperState: true}, message: "state"},
		{name: "mail scope unticked", consent: fakeoauth.Consent{UntickMail: true}, message: fakeoauth.GoogleMailScope},
		{name: "other account", email: "other@example.com", args: []string{"--account", "scanner@example.com"},
			message: "other@example.com consented, but scanner@example.com was expected"},
		{name: "denied", consent: fakeoauth.Consent{Deny: true}, message: "access_denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := bridgetest.New(t, bridgetest.Options{})
			env.OAuth.SetConsent(tt.consent)
			if tt.email != "" {
				env.OAuth.SetEmail(tt.email)
			}
			out, err := authorize(t, env, append([]string{"printer"}, tt.args...)...)
			if err == nil {
				t.Fatalf("authorize succeeded:\n%s", out)
			}
			var ue usageError
			if errors.As(err, &ue) {
				t.Errorf("err is a usage error: %v", err)
			}
			if !strings.Contains(err.Error(), tt.message) || !strings.Contains(err.Error(), "nothing was stored") {
				t.Errorf("err = %q, expected it to mention %q and that nothing was stored", err, tt.message)
			}
			if passwordLine.MatchString(out) {
				t.Errorf("a password was printed although authorize failed:\n%s", out)
			}
			storeIsEmpty(t, env)
		})
	}
}

func TestAuthorizeTimeout(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	out, err := runCommand(t, "", "authorize", "printer", "--config", env.ConfigPath, "--timeout", "100ms")
	if err == nil || !strings.Contains(err.Error(), "no redirect from the consent screen arrived in time") {
		t.Fatalf("err = %v\n%s", err, out)
	}
	if !strings.Contains(err.Error(), "--timeout") {
		t.Errorf("err = %q, expected a hint about --timeout", err)
	}
	storeIsEmpty(t, env)
}

func TestAuthorizeFailedExchange(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	env.OAuth.SetTokenFault(fakeoauth.ServerError)
	_, err := authorize(t, env, "printer")
	if err == nil || !strings.Contains(err.Error(), "exchanging the authorization code") {
		t.Fatalf("err = %v", err)
	}
	storeIsEmpty(t, env)
}

func TestAuthorizePasswordFromStdin(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	c := start(t, "authorize", "printer", "--config", env.ConfigPath, "--password-file", "-")
	io.WriteString(c.stdin, "chosen secret\n")
	c.stdin.Close()
	browse(t, c.consentURL(t, env))
	if err := c.wait(t); err != nil {
		t.Fatalf("authorize: %v\n%s", err, c.stdout.String())
	}
	out := c.stdout.String()
	if passwordLine.MatchString(out) {
		t.Errorf("a generated password was printed:\n%s", out)
	}
	if strings.Contains(out, "chosen secret") {
		t.Errorf("the chosen password was printed:\n%s", out)
	}
	if strings.Contains(out, "paste it here") {
		t.Errorf("authorize offers pasting although standard input carried the password:\n%s", out)
	}
	readStore(t, env, func(st *store.Store) {
		if !passwordMatches(t, st, "printer", "chosen secret") {
			t.Error("the password from standard input does not match the stored hash")
		}
	})
}

func TestAuthorizeExistingUserKeepsPassword(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	out, err := authorize(t, env, "printer", "--account", "old@example.com", "--allow-sender", "old@example.com")
	if err != nil {
		t.Fatal(err)
	}
	pw := printedPassword(t, out)

	// Consent again for another account, as after a revoked consent.
	out, err = authorize(t, env, "printer", "--account", "new@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if passwordLine.MatchString(out) {
		t.Errorf("a new password was generated for an existing user:\n%s", out)
	}
	for _, want := range []string{"printer keeps its password", "printer sent as old@example.com before",
		"its refresh token was deleted"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	readStore(t, env, func(st *store.Store) {
		if !passwordMatches(t, st, "printer", pw) {
			t.Error("the first password no longer matches")
		}
		u, _ := st.User("printer")
		if u.Account != "new@example.com" || !slices.Equal(u.AllowedSenders, []string{"old@example.com"}) {
			t.Errorf("user = %+v", u)
		}
		if _, err := st.Account("old@example.com"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("old account err = %v, expected ErrNotFound", err)
		}
	})
}

func TestAuthorizePasswordFileReplacesPassword(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	if _, err := authorize(t, env, "printer"); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("from a file\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := authorize(t, env, "printer", "--password-file", file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "printer has the password from "+file) {
		t.Errorf("output:\n%s", out)
	}
	readStore(t, env, func(st *store.Store) {
		if !passwordMatches(t, st, "printer", "from a file") {
			t.Error("the password from the file does not match")
		}
	})
}

func TestAuthorizeUsageErrors(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	tests := []struct {
		name string
		args []string
	}{
		{"no user", []string{}},
		{"two users", []string{"a", "b"}},
		{"space in user", []string{"a b"}},
		{"bad account", []string{"a", "--account", "Name <a@example.com>"}},
		{"bad sender", []string{"a", "--allow-sender", "not an address"}},
		{"bad port", []string{"a", "--port", "70000"}},
		{"bad timeout", []string{"a", "--timeout", "-1s"}},
		{"unknown provider", []string{"a", "--provider", "yahoo"}},
		{"unknown flag", []string{"a", "--nope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"authorize", "--config", env.ConfigPath}, tt.args...)
			_, err := runCommand(t, "", args...)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("err = %v, expected a usage error", err)
			}
		})
	}
	storeIsEmpty(t, env)
}

func TestChooseProvider(t *testing.T) {
	t.Parallel()
	single := &config.Config{Path: "c.yaml", Providers: map[string]config.Provider{"work": {}}}
	two := &config.Config{Path: "c.yaml", Providers: map[string]config.Provider{"google": {}, "microsoft": {}}}
	none := &config.Config{Path: "c.yaml"}

	if got, err := chooseProvider(single, ""); err != nil || got != "work" {
		t.Errorf("only provider: %q, %v", got, err)
	}
	if got, err := chooseProvider(two, "microsoft"); err != nil || got != "microsoft" {
		t.Errorf("named provider: %q, %v", got, err)
	}
	if _, err := chooseProvider(two, ""); err == nil || !strings.Contains(err.Error(), "--provider") {
		t.Errorf("several providers: err = %v, expected a hint about --provider", err)
	}
	if _, err := chooseProvider(single, "google"); err == nil || !strings.Contains(err.Error(), "work") {
		t.Errorf("unknown provider: err = %v, expected the configured names", err)
	}
	if _, err := chooseProvider(none, ""); err == nil {
		t.Error("no provider: no error")
	}
}

func TestReadPasswordFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, input, want string
		wantErr           bool
	}{
		{name: "newline", input: "secret\n", want: "secret"},
		{name: "CRLF", input: "secret\r\n", want: "secret"},
		{name: "no newline", input: "secret", want: "secret"},
		{name: "only one newline trimmed", input: "secret\n\n", wantErr: true},
		{name: "spaces kept", input: " secret \n", want: " secret "},
		{name: "empty", input: "", wantErr: true},
		{name: "only newline", input: "\n", wantErr: true},
		{name: "NUL", input: "se\x00cret", wantErr: true},
		{name: "too long", input: strings.Repeat("x", maxPasswordBytes+1), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readPasswordFile("-", strings.NewReader(tt.input))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("password = %q, expected %q", got, tt.want)
			}
		})
	}
	if _, err := readPasswordFile(filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Error("missing file: no error")
	}
}

func TestParseFlagsInterspersed(t *testing.T) {
	t.Parallel()
	e := env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	fs := newFlagSet(e, "x", "")
	a := fs.String("a", "", "")
	b := fs.Bool("b", false, "")
	rest, err := parseFlags(fs, []string{"-a", "1", "user", "-b", "--", "-c"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if *a != "1" || !*b || !slices.Equal(rest, []string{"user", "-c"}) {
		t.Errorf("a=%q b=%v rest=%q", *a, *b, rest)
	}
}
