package main

import (
	"strings"
	"testing"
	"time"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakeoauth"
	"github.com/bridgemail/bridge/store"
)

func TestAuthorizeDeviceMicrosoftThenSend(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{Flavor: fakeoauth.Microsoft})
	srv := serve(t, env)
	c := start(t, "authorize", "scanner", "--config", env.ConfigPath, "--device", "--account", fakeoauth.DefaultEmail)

	code := c.stdout.waitLine(t, "user code", func(l string) bool {
		return strings.TrimSpace(l) != "" && strings.TrimSpace(l) == env.OAuth.LastUserCode()
	})
	c.stdout.waitLine(t, "waiting line", func(l string) bool { return strings.HasPrefix(l, "Waiting") })
	// One authorization_pending poll, then the user enters the code.
	time.Sleep(1200 * time.Millisecond)
	env.OAuth.ApproveDevice(strings.TrimSpace(code))
	if err := c.wait(t); err != nil {
		t.Fatalf("authorize --device: %v\n%s", err, c.stdout.String())
	}
	pw := printedPassword(t, c.stdout.String())

	if err := send(t, srv.addr, "scanner", pw, fakeoauth.DefaultEmail); err != nil {
		t.Fatalf("send after device authorize: %v", err)
	}
	env.Gmail.WaitMessages(t, 1, 5*time.Second)
}

func TestAuthorizeDeviceRefusedForGoogle(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{})
	out, err := runCommand(t, "", "authorize", "printer", "--config", env.ConfigPath, "--device")
	if err == nil {
		t.Fatalf("authorize --device for Google succeeded:\n%s", out)
	}
	if !strings.Contains(err.Error(), "Google does not allow") {
		t.Errorf("error does not say why: %v", err)
	}
	storeIsEmpty(t, env)
}

func TestMicrosoftRotationSurvivesRestart(t *testing.T) {
	t.Parallel()
	env := bridgetest.New(t, bridgetest.Options{Flavor: fakeoauth.Microsoft})
	var original string
	readStore(t, env, func(st *store.Store) {
		original = env.Seed(t, st, "scanner", "pw-1234567890", fakeoauth.DefaultEmail)
	})

	srv := serve(t, env)
	if err := send(t, srv.addr, "scanner", "pw-1234567890", fakeoauth.DefaultEmail); err != nil {
		t.Fatal(err)
	}
	srv.stop()

	// The first refresh rotated the token and invalidated the original;
	// a restarted server must find the new one in the store.
	readStore(t, env, func(st *store.Store) {
		a, err := st.Account(fakeoauth.DefaultEmail)
		if err != nil {
			t.Fatal(err)
		}
		if a.RefreshToken == original {
			t.Error("the store still holds the rotated-out refresh token")
		}
	})
	srv = serve(t, env)
	if err := send(t, srv.addr, "scanner", "pw-1234567890", fakeoauth.DefaultEmail); err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	env.Gmail.WaitMessages(t, 2, 5*time.Second)
}
