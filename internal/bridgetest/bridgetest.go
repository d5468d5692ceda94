// Package bridgetest sets up what an end-to-end test of the bridge needs:
// a fake OAuth provider, a fake submission server, and a configuration
// file that points the bridge at both.
package bridgetest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/internal/fakegmail"
	"github.com/bridgemail/bridge/internal/fakeoauth"
	"github.com/bridgemail/bridge/store"
)

// Options selects the fakes. The zero value is Google with Gmail on the
// implicit TLS port.
type Options struct {
	Flavor fakeoauth.Flavor
	// StartTLS makes the fake submission server use STARTTLS (port 587
	// style) instead of implicit TLS (port 465 style).
	StartTLS bool
	// ExtraYAML is appended to the generated configuration file.
	ExtraYAML string
	// Listeners replaces the default listener list, as YAML lines
	// indented under "listeners:".
	Listeners string
	// ClientSecret replaces the fake provider's default client secret.
	// Microsoft clients are public and have none unless it is set.
	ClientSecret string
	// AccessTokenLifetime is the expires_in of the access tokens the fake
	// provider issues. Zero means the fake's default of about an hour.
	AccessTokenLifetime time.Duration
	// Gmail, if set, adjusts the options of the fake submission server
	// before it starts.
	Gmail func(*fakegmail.Options)
}

// Env is a running set of fakes and the configuration that uses them.
type Env struct {
	OAuth *fakeoauth.Server
	Gmail *fakegmail.Server
	// Dir holds the configuration file and the store.
	Dir        string
	ConfigPath string
	Config     *config.Config
	// Provider is the name of the configured provider.
	Provider string
}

// New starts the fakes and writes and loads a configuration for them.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	e := &Env{Dir: t.TempDir(), Provider: "google"}

	e.OAuth = fakeoauth.Start(t, fakeoauth.Options{
		Flavor:              opts.Flavor,
		ClientSecret:        opts.ClientSecret,
		AccessTokenLifetime: opts.AccessTokenLifetime,
	})
	gopts := fakegmail.Options{
		Flavor:     fakegmail.Gmail,
		TLS:        fakegmail.ImplicitTLS,
		CheckToken: e.OAuth.ValidAccessToken,
	}
	kind := config.KindGoogle
	if opts.Flavor == fakeoauth.Microsoft {
		e.Provider = "microsoft"
		kind = config.KindMicrosoft
		gopts.Flavor = fakegmail.Microsoft
		opts.StartTLS = true
	}
	tlsMode := config.TLSImplicit
	if opts.StartTLS {
		gopts.TLS = fakegmail.StartTLS
		tlsMode = config.TLSStartTLS
	}
	if opts.Gmail != nil {
		opts.Gmail(&gopts)
	}
	e.Gmail = fakegmail.Start(t, gopts)

	listeners := opts.Listeners
	if listeners == "" {
		listeners = "  - address: 127.0.0.1:0\n"
	}
	secret := ""
	if s := e.OAuth.ClientSecret(); s != "" {
		secret = fmt.Sprintf("    client_secret: %q\n", s)
	}
	yaml := fmt.Sprintf(`listeners:
%sstore:
  path: %s
providers:
  %s:
    kind: %s
    client_id: %q
%s    auth_url: %s
    token_url: %s
    device_auth_url: %s
    userinfo_url: %s
    upstream:
      address: %s
      tls: %s
      server_name: localhost
      ca_file: %s
log:
  level: debug
%s`, listeners, filepath.Join(e.Dir, "bridge.db"), e.Provider, kind, e.OAuth.ClientID(), secret,
		e.OAuth.AuthURL(), e.OAuth.TokenURL(), e.OAuth.DeviceAuthURL(), e.OAuth.UserinfoURL(),
		e.Gmail.Addr(), tlsMode, e.Gmail.Certs().CAFile, opts.ExtraYAML)

	e.ConfigPath = filepath.Join(e.Dir, "config.yaml")
	if err := os.WriteFile(e.ConfigPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(e.ConfigPath)
	if err != nil {
		t.Fatalf("loading generated config: %v\n%s", err, yaml)
	}
	e.Config = cfg
	return e
}

// OpenStore opens the configured store and closes it when the test ends.
func (e *Env) OpenStore(t testing.TB) *store.Store {
	t.Helper()
	key, err := store.LoadOrCreateKey(e.Config.Store.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(e.Config.Store.Path, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Seed stores a user with password that sends as account, with a refresh
// token that the fake provider issued. It returns the refresh token.
func (e *Env) Seed(t testing.TB, st *store.Store, user, password, account string) string {
	t.Helper()
	hash, err := auth.HashPassword(password)
	if err != nil {
		t.Fatal(err)
	}
	refresh := e.OAuth.IssueRefreshToken(account)
	err = st.Authorize(
		store.User{Name: user, PasswordHash: hash, Account: account, Provider: e.Provider},
		store.Account{Address: account, Provider: e.Provider, RefreshToken: refresh, Scopes: e.OAuth.Scopes()},
	)
	if err != nil {
		t.Fatal(err)
	}
	return refresh
}
