package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bridgemail/bridge/admin"
	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/store"
)

const account = "scanner@example.com"

func TestAuthorizeAgainstServe(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	srv := serve(t, env)

	out, err := authorize(t, env, "printer", "--account", account)
	if err != nil {
		t.Fatalf("authorize: %v\n%s", err, out)
	}
	if !strings.Contains(out, "The running bridge serve applied the change") {
		t.Errorf("output does not say that serve applied the change:\n%s", out)
	}
	pw := printedPassword(t, out)

	if err := send(t, srv.addr, "printer", pw, account); err != nil {
		t.Fatalf("sending with the new password: %v", err)
	}
	msgs := env.Gmail.Messages()
	if len(msgs) != 1 || msgs[0].User != account {
		t.Fatalf("messages at the fake Gmail = %+v, expected one from %s", msgs, account)
	}
	if !strings.Contains(srv.logs.String(), "msg=\"user authorized\" user=printer account="+account) {
		t.Errorf("serve did not log the change:\n%s", srv.logs.String())
	}
}

func TestUsersRemoveAgainstServe(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	srv := serve(t, env)
	out, err := authorize(t, env, "printer", "--account", account)
	if err != nil {
		t.Fatal(err)
	}
	pw := printedPassword(t, out)
	// A successful login puts the password in the server's cache.
	if err := send(t, srv.addr, "printer", pw, account); err != nil {
		t.Fatal(err)
	}

	out, err = runCommand(t, "", "users", "remove", "printer", "--config", env.ConfigPath)
	if err != nil {
		t.Fatalf("users remove: %v", err)
	}
	for _, want := range []string{"Removed user printer", "its refresh token was deleted too", "The running bridge serve"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if err := send(t, srv.addr, "printer", pw, account); smtpCode(err) != 535 {
		t.Errorf("login after remove: err = %v, expected 535", err)
	}

	srv.stop()
	storeIsEmpty(t, env)
}

func TestSecondUserSharesToken(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	srv := serve(t, env)
	out, err := authorize(t, env, "printer", "--account", account)
	if err != nil {
		t.Fatal(err)
	}
	printerPW := printedPassword(t, out)
	if err := send(t, srv.addr, "printer", printerPW, account); err != nil {
		t.Fatal(err)
	}

	out, err = authorize(t, env, "cron", "--account", account)
	if err != nil {
		t.Fatal(err)
	}
	cronPW := printedPassword(t, out)
	if !strings.Contains(out, "replaced the one stored for "+account) || !strings.Contains(out, "(printer)") {
		t.Errorf("output does not report the shared token:\n%s", out)
	}
	// The old refresh token no longer works, so a server that kept it
	// in its cache could not refresh.
	env.OAuth.RevokeAll()
	env.OAuth.ExpireAccessTokens()
	if _, err := authorize(t, env, "cron", "--account", account); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct{ name, pw string }{{"printer", printerPW}, {"cron", cronPW}} {
		if err := send(t, srv.addr, u.name, u.pw, account); err != nil {
			t.Errorf("sending as %s after the token was replaced: %v", u.name, err)
		}
	}

	out, err = runCommand(t, "", "users", "remove", "printer", "--config", env.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, account+" keeps its refresh token for cron") {
		t.Errorf("output:\n%s", out)
	}
	if err := send(t, srv.addr, "cron", cronPW, account); err != nil {
		t.Errorf("sending as cron after printer was removed: %v", err)
	}

	srv.stop()
	readStore(t, env, func(st *store.Store) {
		accounts, _ := st.Accounts()
		if len(accounts) != 1 || accounts[0].Address != account {
			t.Errorf("accounts = %+v, expected only %s", accounts, account)
		}
	})
}

func TestUsersPasswdAgainstServe(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	srv := serve(t, env)
	out, err := authorize(t, env, "printer", "--account", account)
	if err != nil {
		t.Fatal(err)
	}
	oldPW := printedPassword(t, out)
	if err := send(t, srv.addr, "printer", oldPW, account); err != nil {
		t.Fatal(err)
	}

	out, err = runCommand(t, "", "users", "passwd", "printer", "--config", env.ConfigPath)
	if err != nil {
		t.Fatalf("users passwd: %v", err)
	}
	newPW := printedPassword(t, out)
	if err := send(t, srv.addr, "printer", oldPW, account); smtpCode(err) != 535 {
		t.Errorf("old password after passwd: err = %v, expected 535", err)
	}
	if err := send(t, srv.addr, "printer", newPW, account); err != nil {
		t.Errorf("new password after passwd: %v", err)
	}
}

func TestAllowSenderAgainstServe(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	srv := serve(t, env)
	out, err := authorize(t, env, "printer", "--account", account, "--allow-sender", "Scan@Example.com")
	if err != nil {
		t.Fatal(err)
	}
	pw := printedPassword(t, out)
	if err := send(t, srv.addr, "printer", pw, "other@example.com"); smtpCode(err) != 550 {
		t.Errorf("MAIL FROM another sender: err = %v, expected 550", err)
	}
	if err := send(t, srv.addr, "printer", pw, "scan@example.com"); err != nil {
		t.Errorf("MAIL FROM the allowed sender: %v", err)
	}

	// passwd keeps the list unless --allow-sender or --any-sender is given.
	file := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(file, []byte("second password\n"), 0o600)
	if _, err := runCommand(t, "", "users", "passwd", "printer", "--password-file", file, "--config", env.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if err := send(t, srv.addr, "printer", "second password", "other@example.com"); smtpCode(err) != 550 {
		t.Errorf("MAIL FROM another sender after passwd: err = %v, expected 550", err)
	}
	if _, err := runCommand(t, "", "users", "passwd", "printer", "--any-sender", "--password-file", file, "--config", env.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if err := send(t, srv.addr, "printer", "second password", "other@example.com"); err != nil {
		t.Errorf("MAIL FROM another sender after --any-sender: %v", err)
	}
}

func TestUsersListAgainstServe(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	srv := serve(t, env)
	out, err := authorize(t, env, "printer", "--account", account, "--allow-sender", "a@example.com", "--allow-sender", "b@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := send(t, srv.addr, "printer", printedPassword(t, out), "a@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := authorize(t, env, "cron", "--account", "other@example.com"); err != nil {
		t.Fatal(err)
	}

	out, err = runCommand(t, "", "users", "list", "--config", env.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("list has %d lines, expected a header and 2 users:\n%s", len(lines), out)
	}
	header := strings.Fields(lines[0])
	if want := []string{"USER", "ACCOUNT", "PROVIDER", "CREATED", "LAST", "USED", "TOKEN", "ALLOWED", "SENDERS"}; !slices.Equal(header, want) {
		t.Errorf("header = %q", lines[0])
	}
	date := `\d{4}-\d\d-\d\d \d\d:\d\d`
	cron := regexp.MustCompile(`^cron +other@example\.com +google +` + date + ` +never +stored +any$`)
	if !cron.MatchString(lines[1]) {
		t.Errorf("cron line = %q", lines[1])
	}
	// Sending refreshed the token and recorded the login.
	printer := regexp.MustCompile(`^printer +` + regexp.QuoteMeta(account) + ` +google +` + date + ` +` + date + ` +ok +a@example\.com,b@example\.com$`)
	if !printer.MatchString(lines[2]) {
		t.Errorf("printer line = %q", lines[2])
	}
}

func TestUsersListTokenErrorAgainstServe(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	srv := serve(t, env)
	out, err := authorize(t, env, "printer", "--account", account)
	if err != nil {
		t.Fatal(err)
	}
	env.OAuth.RevokeAll()
	if err := send(t, srv.addr, "printer", printedPassword(t, out), account); err == nil {
		t.Fatal("sending with a revoked consent succeeded")
	}
	out, err = runCommand(t, "", "users", "list", "--config", env.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "consent revoked or expired: run bridge authorize printer") {
		t.Errorf("list does not show the revoked consent:\n%s", out)
	}
}

func TestUsersListLocal(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	out, err := runCommand(t, "", "users", "list", "--config", env.ConfigPath)
	if err != nil || !strings.Contains(out, "No users yet") {
		t.Errorf("list without a store: %v\n%s", err, out)
	}
	if _, err := os.Stat(env.Config.Store.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("users list created the database: %v", err)
	}

	if _, err := authorize(t, env, "printer", "--account", account); err != nil {
		t.Fatal(err)
	}
	out, err = runCommand(t, "", "users", "list", "--config", env.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^printer +` + regexp.QuoteMeta(account) + ` +google +.* +never +stored +any$`).MatchString(out) {
		t.Errorf("list:\n%s", out)
	}
}

func TestUsersRemoveAndPasswdLocal(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	if _, err := runCommand(t, "", "users", "remove", "printer", "--config", env.ConfigPath); err == nil ||
		!strings.Contains(err.Error(), "no user printer") {
		t.Errorf("remove without a store: err = %v", err)
	}
	out, err := authorize(t, env, "printer", "--account", account)
	if err != nil {
		t.Fatal(err)
	}
	oldPW := printedPassword(t, out)

	out, err = runCommand(t, "new secret\n", "users", "passwd", "printer", "--password-file", "-", "--config", env.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "No bridge serve is running") {
		t.Errorf("passwd output:\n%s", out)
	}
	readStore(t, env, func(st *store.Store) {
		if passwordMatches(t, st, "printer", oldPW) {
			t.Error("old password still matches after passwd")
		}
		if !passwordMatches(t, st, "printer", "new secret") {
			t.Error("new password does not match after passwd")
		}
	})

	for _, args := range [][]string{{"passwd", "nobody"}, {"remove", "nobody"}} {
		_, err := runCommand(t, "", append(append([]string{"users"}, args...), "--config", env.ConfigPath)...)
		if err == nil || !strings.Contains(err.Error(), "no user nobody") {
			t.Errorf("users %v: err = %v", args, err)
		}
	}

	if _, err := runCommand(t, "", "users", "remove", "printer", "--config", env.ConfigPath); err != nil {
		t.Fatal(err)
	}
	storeIsEmpty(t, env)
}

func TestUsersLockedWithoutAdminSocket(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	env.OpenStore(t) // held until the test ends, as by a server whose socket is gone
	_, err := runCommand(t, "", "users", "list", "--config", env.ConfigPath)
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "admin socket") {
		t.Errorf("err = %v, expected ErrLocked and a word about the admin socket", err)
	}
}

func TestAuthorizeLockedStoreFailsBeforeConsent(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	env.OpenStore(t)
	out, err := runCommand(t, "", "authorize", "printer", "--config", env.ConfigPath)
	if !errors.Is(err, store.ErrLocked) {
		t.Errorf("err = %v, expected ErrLocked", err)
	}
	if strings.Contains(out, env.OAuth.AuthURL()) {
		t.Errorf("a consent URL was printed although the store cannot be written:\n%s", out)
	}
}

func TestUsersUsageErrors(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"list", "extra"},
		{"remove"},
		{"passwd"},
		{"passwd", "printer", "--any-sender", "--allow-sender", "a@example.com"},
		{"passwd", "printer", "--allow-sender", "<a@example.com>"},
	} {
		_, err := runCommand(t, "", append(append([]string{"users"}, args...), "--config", env.ConfigPath)...)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("users %q: err = %v, expected a usage error", args, err)
		}
	}
}

func TestAdminUserRoutesRejectBadRequests(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	serve(t, env)
	c, err := admin.Dial(env.Config.Store.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hash := "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"
	tests := []struct {
		name, method, path string
		body               any
		status             int
	}{
		{"unknown field", "PUT", "/users/printer", map[string]any{"nope": 1}, http.StatusBadRequest},
		{"no refresh token", "PUT", "/users/printer",
			authorizeRequest{Provider: "google", Account: account, PasswordHash: hash}, http.StatusBadRequest},
		{"unknown provider", "PUT", "/users/printer",
			authorizeRequest{Provider: "yahoo", Account: account, RefreshToken: "r", PasswordHash: hash}, http.StatusBadRequest},
		{"new user without password", "PUT", "/users/printer",
			authorizeRequest{Provider: "google", Account: account, RefreshToken: "r", KeepPassword: true}, http.StatusBadRequest},
		{"plain password", "PUT", "/users/printer",
			authorizeRequest{Provider: "google", Account: account, RefreshToken: "r", PasswordHash: "secret"}, http.StatusBadRequest},
		{"space in name", "PUT", "/users/a%20b",
			authorizeRequest{Provider: "google", Account: account, RefreshToken: "r", PasswordHash: hash}, http.StatusBadRequest},
		{"passwd unknown user", "PUT", "/users/nobody/password", passwordRequest{PasswordHash: hash}, http.StatusNotFound},
		{"remove unknown user", "DELETE", "/users/nobody", nil, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Call(ctx, tt.method, tt.path, tt.body, nil)
			var ae *admin.Error
			if !errors.As(err, &ae) || ae.Status != tt.status {
				t.Errorf("err = %v, expected status %d", err, tt.status)
			}
		})
	}

	var infos []userInfo
	if err := c.Call(ctx, "GET", "/users", nil, &infos); err != nil || len(infos) != 0 {
		t.Errorf("users after rejected requests = %+v, %v", infos, err)
	}
}

func TestAdminUserNameWithSlash(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	srv := serve(t, env)
	out, err := authorize(t, env, "office/scanner@example.com", "--account", account)
	if err != nil {
		t.Fatalf("authorize: %v\n%s", err, out)
	}
	if err := send(t, srv.addr, "office/scanner@example.com", printedPassword(t, out), account); err != nil {
		t.Errorf("sending: %v", err)
	}
	if _, err := runCommand(t, "", "users", "remove", "office/scanner@example.com", "--config", env.ConfigPath); err != nil {
		t.Errorf("remove: %v", err)
	}
}
