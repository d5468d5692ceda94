package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bridgemail/bridge/internal/bridgetest"
)

// TestCheckBadConfigGolden runs bridge check on each bad configuration in
// testdata/config and compares its output with the .golden file next to
// it. go test -run CheckBadConfig -update rewrites the golden files.
func TestCheckBadConfigGolden(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join("testdata", "config"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs in %s: %v", dir, err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			out, errOut, code := runBridge(t, dir, "check", "--config", name)
			if code != 1 {
				t.Errorf("exit code %d, want 1; stderr: %s", code, errOut)
			}
			if !strings.HasPrefix(errOut, "bridge: check found ") {
				t.Errorf("stderr = %q, want the problem count", errOut)
			}
			// Paths in messages are absolute; the golden files have $DIR.
			got := strings.ReplaceAll(out, dir, "$DIR")
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s:\n got:\n%s\nwant:\n%s", filepath.Base(golden), got, want)
			}
			for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
				if !strings.HasPrefix(line, name+":") {
					t.Errorf("line %q does not start with %s:", line, name)
				}
			}
		})
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join("testdata", "config"))
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runBridge(t, dir, "serve", "--config", "listener-tls.yaml")
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(errOut, `listener-tls.yaml:8: listeners[2].tls: invalid mode "sometimes"`) {
		t.Errorf("stderr lacks the file:line problem:\n%s", errOut)
	}
}

func TestCheckWithoutServer(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	out, errOut, code := runBridge(t, "", "check", "--config", env.ConfigPath)
	if code != 0 {
		t.Fatalf("check of a config without store exited %d:\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "does not exist yet") {
		t.Errorf("output does not say that the store is not created yet:\n%s", out)
	}
	if _, err := os.Stat(env.Config.Store.Path); err == nil {
		t.Errorf("check created the store")
	}
	if _, err := os.Stat(env.Config.Store.KeyFile); err == nil {
		t.Errorf("check created the key file")
	}

	seedStore(t, env)
	out, errOut, code = runBridge(t, "", "check", "--config", env.ConfigPath, "--online")
	if code != 0 {
		t.Fatalf("online check exited %d:\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"ok: config " + env.ConfigPath,
		"no bridge serve is running: 1 user, 1 account",
		"ok: account " + svcAccount + ": access token refreshed",
		"no problems found",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := env.Gmail.AuthAttempts(); n != 1 {
		t.Errorf("upstream AUTH attempts = %d, want 1", n)
	}

	env.OAuth.RevokeAll()
	out, errOut, code = runBridge(t, "", "check", "--config", env.ConfigPath, "--online")
	if code != 1 {
		t.Errorf("online check with a revoked consent exited %d, want 1", code)
	}
	if !strings.Contains(out, "account "+svcAccount+": consent for "+svcAccount+" was revoked") ||
		!strings.Contains(out, "run bridge authorize "+svcUser) {
		t.Errorf("output does not name the revoked consent and its fix:\n%s", out)
	}
	if !strings.Contains(errOut, "check found 1 problem") {
		t.Errorf("stderr = %q", errOut)
	}
}

func TestCheckStoreProblems(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	seedStore(t, env)
	// The user's provider is renamed in the config, so it no longer
	// exists for the stored user.
	editConfig(t, env, "providers:\n  google:\n", "providers:\n  gmail:\n")
	out, _, code := runBridge(t, "", "check", "--config", env.ConfigPath)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(out, `user printer: provider "google" is not in `+env.ConfigPath) {
		t.Errorf("output lacks the missing provider:\n%s", out)
	}

	if err := os.WriteFile(env.Config.Store.KeyFile, make([]byte, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, _ = runBridge(t, "", "check", "--config", env.ConfigPath)
	if !strings.Contains(out, "account "+svcAccount+": opening sealed token") {
		t.Errorf("output lacks the token that the wrong key cannot open:\n%s", out)
	}

	if err := os.Chmod(env.Config.Store.KeyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, _ = runBridge(t, "", "check", "--config", env.ConfigPath)
	if !strings.Contains(out, "chmod 600") {
		t.Errorf("output does not say how to fix the key file's mode:\n%s", out)
	}
}

func TestCheckThroughServer(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	seedStore(t, env)
	startBridge(t, env)

	out, errOut, code := runBridge(t, "", "check", "--config", env.ConfigPath, "--online")
	if code != 0 {
		t.Fatalf("check exited %d:\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"through the running bridge serve (pid ",
		": 1 user, 1 account",
		"ok: account " + svcAccount + ": access token refreshed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	env.OAuth.RevokeAll()
	out, _, code = runBridge(t, "", "check", "--config", env.ConfigPath, "--online")
	if code != 1 {
		t.Errorf("exit code with a revoked consent %d, want 1", code)
	}
	if !strings.Contains(out, "was revoked") || !strings.Contains(out, "bridge authorize "+svcUser) {
		t.Errorf("output lacks the revoked consent:\n%s", out)
	}
}

func TestStatusReportsAccounts(t *testing.T) {
	// Without reuse, each message logs in upstream again, so the revoked
	// consent below shows on the next one.
	env := bridgetest.New(t, bridgetest.Options{ExtraYAML: "pool:\n  max_idle: -1\n"})
	seedStore(t, env)
	p := startBridge(t, env)
	addr := p.addrs()[0]
	if _, err := relay(dialLogin(t, addr), "a@example.org"); err != nil {
		t.Fatal(err)
	}

	st := p.status()
	if st.Version != testVersion || st.PID != p.cmd.Process.Pid || st.Config != env.ConfigPath {
		t.Errorf("status header = %s, pid %d, %s", st.Version, st.PID, st.Config)
	}
	if st.Started.IsZero() || st.Started.After(time.Now()) {
		t.Errorf("started = %v", st.Started)
	}
	if len(st.Listeners) != 1 || st.Listeners[0].Address != addr || st.Listeners[0].Configured != "127.0.0.1:0" {
		t.Errorf("listeners = %+v", st.Listeners)
	}
	if len(st.Accounts) != 1 {
		t.Fatalf("accounts = %+v, want 1", st.Accounts)
	}
	a := st.Accounts[0]
	if a.Account != svcAccount || a.Provider != env.Provider || strings.Join(a.Users, ",") != svcUser {
		t.Errorf("account = %+v", a)
	}
	if a.Consent != consentGranted {
		t.Errorf("consent = %q, want %q", a.Consent, consentGranted)
	}
	if a.LastRefresh.IsZero() || !a.TokenExpiry.After(time.Now()) {
		t.Errorf("last refresh %v, token expiry %v", a.LastRefresh, a.TokenExpiry)
	}
	if a.Sent != 1 || a.LastSent.IsZero() {
		t.Errorf("sent %d, last sent %v", a.Sent, a.LastSent)
	}
	if a.LastError != "" {
		t.Errorf("last error = %q", a.LastError)
	}

	out, errOut, code := runBridge(t, "", "status", "--config", env.ConfigPath)
	if code != 0 {
		t.Fatalf("bridge status exited %d: %s", code, errOut)
	}
	for _, want := range []string{"bridge " + testVersion, addr, svcAccount, "consent:", "granted", "sent since start:"} {
		if !strings.Contains(out, want) {
			t.Errorf("text status lacks %q:\n%s", want, out)
		}
	}

	env.OAuth.RevokeAll()
	env.OAuth.ExpireAccessTokens()
	if _, err := relay(dialLogin(t, addr), "a@example.org"); err == nil {
		t.Fatal("send succeeded after the consent was revoked")
	}
	a = p.status().Accounts[0]
	if a.Consent != consentRevoked {
		t.Errorf("consent after revocation = %q, want %q", a.Consent, consentRevoked)
	}
	if !strings.Contains(a.LastError, "bridge authorize "+svcUser) || a.LastErrorAt.IsZero() {
		t.Errorf("last error = %q at %v", a.LastError, a.LastErrorAt)
	}
	if !strings.Contains(a.TokenError, "revoked") {
		t.Errorf("token error = %q", a.TokenError)
	}
}

func TestStatusWithoutServer(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	_, errOut, code := runBridge(t, "", "status", "--config", env.ConfigPath)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(errOut, "no bridge serve is running") {
		t.Errorf("stderr = %q", errOut)
	}
}

func TestStatusJSONIsStable(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	seedStore(t, env)
	startBridge(t, env)
	out, _, code := runBridge(t, "", "status", "--json", "--config", env.ConfigPath)
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"version", "pid", "config", "started", "uptime_seconds", "sessions", "listeners", "accounts"} {
		if _, ok := raw[key]; !ok {
			t.Errorf("status JSON lacks %q:\n%s", key, out)
		}
	}
}
