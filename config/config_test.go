package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadExample(t *testing.T) {
	cfg, err := Load("../config.example.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := cfg.Listeners[0].Address; got != DefaultListenAddress {
		t.Errorf("listener address = %q, want %q", got, DefaultListenAddress)
	}
	g, ok := cfg.Providers["google"]
	if !ok {
		t.Fatal("provider google missing")
	}
	if g.Upstream.Address != GoogleSMTPAddress || g.Upstream.TLS != TLSImplicit {
		t.Errorf("upstream = %+v, want %s implicit", g.Upstream, GoogleSMTPAddress)
	}
	if !filepath.IsAbs(cfg.Store.Path) {
		t.Errorf("store path %q is not absolute", cfg.Store.Path)
	}
	if cfg.Limits.MaxMessageBytes != DefaultMaxMessageBytes {
		t.Errorf("max_message_bytes = %d", cfg.Limits.MaxMessageBytes)
	}
}

// The example sets each key to its default, so the two must agree.
func TestExampleMatchesDefaults(t *testing.T) {
	example, err := Load("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	minimal := writeConfig(t, `
store:
  path: state/bridge.db
providers:
  google:
    client_id: 1234567890-example.apps.googleusercontent.com
    client_secret: GOCSPX-replace-me
`)
	def, err := Load(minimal)
	if err != nil {
		t.Fatal(err)
	}
	if example.Limits != def.Limits {
		t.Errorf("limits: example %+v, defaults %+v", example.Limits, def.Limits)
	}
	if example.Throttle != def.Throttle {
		t.Errorf("throttle: example %+v, defaults %+v", example.Throttle, def.Throttle)
	}
	if example.Pool != def.Pool {
		t.Errorf("pool: example %+v, defaults %+v", example.Pool, def.Pool)
	}
	if example.Log != def.Log {
		t.Errorf("log: example %+v, defaults %+v", example.Log, def.Log)
	}
	if len(example.TrustedClients) != len(def.TrustedClients) {
		t.Errorf("trusted_clients: example %+v, defaults %+v", example.TrustedClients, def.TrustedClients)
	}
	eg, dg := example.Providers["google"], def.Providers["google"]
	if eg.AuthURL != dg.AuthURL || eg.TokenURL != dg.TokenURL || eg.UserinfoURL != dg.UserinfoURL ||
		eg.Upstream != dg.Upstream || strings.Join(eg.Scopes, " ") != strings.Join(dg.Scopes, " ") {
		t.Errorf("google: example %+v, defaults %+v", eg, dg)
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUnknownKeyHasLine(t *testing.T) {
	path := writeConfig(t, `providers:
  google:
    client_id: x
    client_secret: y
limits:
  max_mesage_bytes: 10
`)
	_, err := Load(path)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 {
		t.Fatalf("err = %v, want one problem", err)
	}
	if ps[0].Line != 6 {
		t.Errorf("line = %d, want 6", ps[0].Line)
	}
	if !strings.Contains(ps[0].Error(), `unknown key "max_mesage_bytes"`) {
		t.Errorf("message = %q", ps[0].Error())
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	path := writeConfig(t, `listeners:
  - address: 0.0.0.0:25
  - address: nonsense
    tls: sometimes
providers:
  google:
    client_id: ""
    client_secret: y
    upstream:
      tls: maybe
log:
  level: loud
`)
	_, err := Load(path)
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err = %v, want Problems", err)
	}
	want := []struct {
		line int
		text string
	}{
		{3, "not loopback"},
		{3, "invalid address"},
		{5, "invalid mode \"sometimes\""},
		{8, "client_id: missing"},
		{11, "invalid mode \"maybe\""},
		{13, "invalid level \"loud\""},
	}
	got := err.Error()
	for _, w := range want {
		if !strings.Contains(got, w.text) {
			t.Errorf("problems lack %q:\n%s", w.text, got)
		}
	}
	for _, p := range ps {
		if p.Line == 0 {
			t.Errorf("problem without line: %v", p)
		}
	}
	if !strings.HasPrefix(got, path+":") {
		t.Errorf("problems do not start with the file name: %s", got)
	}
}

func TestDurationsAndRelativePaths(t *testing.T) {
	path := writeConfig(t, `providers:
  google:
    client_id: x
    client_secret: y
    upstream:
      address: 127.0.0.1:587
limits:
  read_timeout: 90s
store:
  path: data/b.db
`)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.ReadTimeout != 90*time.Second {
		t.Errorf("read_timeout = %v", cfg.Limits.ReadTimeout)
	}
	if got := cfg.Providers["google"].Upstream.TLS; got != TLSStartTLS {
		t.Errorf("port 587 tls = %q, want starttls", got)
	}
	dir := filepath.Dir(path)
	if cfg.Store.Path != filepath.Join(dir, "data/b.db") {
		t.Errorf("store path = %q", cfg.Store.Path)
	}
	if cfg.Store.KeyFile != filepath.Join(dir, "data", DefaultKeyFile) {
		t.Errorf("key file = %q", cfg.Store.KeyFile)
	}
}

func TestSecretRedacted(t *testing.T) {
	s := Secret("GOCSPX-very-secret")
	for _, out := range []string{s.String(), s.GoString()} {
		if strings.Contains(out, "very-secret") {
			t.Errorf("secret printed: %q", out)
		}
	}
}

func TestPoolNegativeValuesRejected(t *testing.T) {
	path := writeConfig(t, `providers:
  google:
    client_id: x
    client_secret: y
pool:
  max_conns: -2
  idle_timeout: -1s
`)
	_, err := Load(path)
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err = %v, want Problems", err)
	}
	got := err.Error()
	for _, want := range []string{"pool.max_conns", "pool.idle_timeout"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %s:\n%s", want, got)
		}
	}
}

func TestPoolMaxConnsDefault(t *testing.T) {
	path := writeConfig(t, `providers:
  google:
    client_id: x
    client_secret: y
`)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Pool.MaxConns != DefaultPoolMaxConns {
		t.Errorf("max_conns = %d, want %d", cfg.Pool.MaxConns, DefaultPoolMaxConns)
	}
}

const minimalProvider = `providers:
  google:
    client_id: x
    client_secret: y
`

func TestTrustedClients(t *testing.T) {
	path := writeConfig(t, minimalProvider+`trusted_clients:
  - user: printer
  - user: scanner
    networks: [10.1.2.3/32, 192.0.2.7, "2001:db8::/64"]
`)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.TrustedClients[0].Networks; strings.Join(got, " ") != "127.0.0.0/8 ::1/128" {
		t.Errorf("default networks = %v, want loopback only", got)
	}
	for _, tc := range []struct {
		addr string
		user string
	}{
		{"127.0.0.1", "printer"},
		{"127.9.9.9", "printer"},
		{"::1", "printer"},
		{"::ffff:127.0.0.1", "printer"},
		{"10.1.2.3", "scanner"},
		{"::ffff:10.1.2.3", "scanner"},
		{"192.0.2.7", "scanner"},
		{"2001:db8::42", "scanner"},
		{"10.1.2.4", ""},
		{"192.0.2.8", ""},
		{"2001:db8:1::1", ""},
		{"fe80::1%eth0", ""},
	} {
		user, ok := cfg.TrustedUser(netip.MustParseAddr(tc.addr))
		if user != tc.user || ok != (tc.user != "") {
			t.Errorf("TrustedUser(%s) = %q, %v, want %q", tc.addr, user, ok, tc.user)
		}
	}
}

func TestNoTrustedClientsTrustsNobody(t *testing.T) {
	cfg, err := Load(writeConfig(t, minimalProvider))
	if err != nil {
		t.Fatal(err)
	}
	if user, ok := cfg.TrustedUser(netip.MustParseAddr("127.0.0.1")); ok {
		t.Errorf("loopback sends as %q without any trusted_clients", user)
	}
}

func TestTrustedClientsInvalid(t *testing.T) {
	path := writeConfig(t, minimalProvider+`trusted_clients:
  - networks: [10.0.0.0/8]
  - user: b
    networks: [not-a-network, 0.0.0.0/0, "::/0", 10.1.0.0/16, "::ffff:10.0.0.0/104"]
`)
	_, err := Load(path)
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err = %v, want Problems", err)
	}
	got := err.Error()
	for _, want := range []string{
		"trusted_clients[0].user: missing",
		`trusted_clients[1].networks[0]: invalid network "not-a-network"`,
		"trusted_clients[1].networks[1]: network 0.0.0.0/0 covers every address",
		"trusted_clients[1].networks[2]: network ::/0 covers every address",
		"trusted_clients[1].networks[3]: network 10.1.0.0/16 overlaps 10.0.0.0/8 of trusted_clients[0]",
		`trusted_clients[1].networks[4]: invalid network "::ffff:10.0.0.0/104"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	for _, p := range ps {
		if p.Line == 0 {
			t.Errorf("problem without line: %v", p)
		}
	}
}

func TestWrongTypeNamesKey(t *testing.T) {
	path := writeConfig(t, `providers:
  google:
    client_id: x
    client_secret: y
limits:
  read_timeout: 10 minutes
  max_recipients: lots
`)
	_, err := Load(path)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 2 {
		t.Fatalf("err = %v, want two problems", err)
	}
	if ps[0].Key != "limits.read_timeout" || ps[0].Line != 6 {
		t.Errorf("first problem = %+v, want limits.read_timeout on line 6", ps[0])
	}
	if ps[1].Key != "limits.max_recipients" || ps[1].Line != 7 {
		t.Errorf("second problem = %+v, want limits.max_recipients on line 7", ps[1])
	}
}

func TestBaseDelayAboveMaxDelayRejected(t *testing.T) {
	path := writeConfig(t, `providers:
  google:
    client_id: x
    client_secret: y
throttle:
  base_delay: 10s
  max_delay: 1s
`)
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "throttle.base_delay") {
		t.Fatalf("err = %v, want a problem at throttle.base_delay", err)
	}
}
