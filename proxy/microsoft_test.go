package proxy

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakegmail"
	"github.com/bridgemail/bridge/internal/fakeoauth"
)

func TestMicrosoftRelay(t *testing.T) {
	h := newHarness(t, bridgetest.Options{Flavor: fakeoauth.Microsoft})
	c := h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send: %v", err)
	}
	m := h.Gmail.WaitMessages(t, 1, 5*time.Second)[0]
	if !bytes.Equal(m.Data, []byte(testMessage)) {
		t.Errorf("data differs: %q", m.Data)
	}
	if m.User != testAccount {
		t.Errorf("upstream user = %q", m.User)
	}
}

func TestMicrosoftRotatedRefreshTokenSaved(t *testing.T) {
	h := newHarness(t, bridgetest.Options{Flavor: fakeoauth.Microsoft})
	before, err := h.store.Account(testAccount)
	if err != nil {
		t.Fatal(err)
	}

	c := h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatal(err)
	}
	after, err := h.store.Account(testAccount)
	if err != nil {
		t.Fatal(err)
	}
	if after.RefreshToken == before.RefreshToken {
		t.Fatal("rotated refresh token was not saved")
	}

	// The old token is dead at the provider; only the saved one works,
	// so a restart with a cold cache must use it.
	h.tokens.Forget(testAccount)
	h.OAuth.ExpireAccessTokens()
	h.waitIdle(t, 1)
	h.srv.pool.discardIdle(testAccount)
	c.Reset()
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send with the saved rotated token: %v", err)
	}
}

func TestMicrosoftTokenRejectedRefreshedOnce(t *testing.T) {
	h := newHarness(t, bridgetest.Options{Flavor: fakeoauth.Microsoft})
	c := h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatal(err)
	}
	// go-smtp returns the connection to the pool after it sends the
	// reply to the final dot; the reply to RSET comes after that.
	c.Reset()
	h.OAuth.ExpireAccessTokens()
	h.waitIdle(t, 1)
	h.srv.pool.discardIdle(testAccount)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send after 535 5.7.3: %v", err)
	}
	if n := h.Gmail.AuthFailures(); n != 1 {
		t.Errorf("upstream AUTH failures = %d, want 1", n)
	}
}

func TestMicrosoftSMTPAuthDisabledNamesFix(t *testing.T) {
	h := newHarness(t, bridgetest.Options{Flavor: fakeoauth.Microsoft})
	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageAuth, Reply: fakegmail.AuthDisabledForTenant, Times: fakegmail.Always})
	c := h.login(t)
	err := c.Mail(testAccount, nil)
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 535 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 139}) {
		t.Fatalf("MAIL: %v, want 535 5.7.139", err)
	}
	if !strings.Contains(se.Message, "authenticated SMTP") {
		t.Errorf("reply %q does not name the fix", se.Message)
	}
	if !strings.Contains(h.logs.String(), "Set-CASMailbox") {
		t.Errorf("log does not name the fix:\n%s", h.logs)
	}
	// A disabled mailbox is not a token problem: no refresh, no retry.
	if n := h.Gmail.AuthAttempts(); n != 1 {
		t.Errorf("upstream AUTH attempts = %d, want 1", n)
	}
}

// The core scenarios, run against each provider's fakes.
func TestCoreScenariosPerProvider(t *testing.T) {
	flavors := []struct {
		name   string
		flavor fakeoauth.Flavor
	}{{"google", fakeoauth.Google}, {"microsoft", fakeoauth.Microsoft}}
	for _, f := range flavors {
		t.Run(f.name, func(t *testing.T) {
			t.Run("plain and login byte-exact", func(t *testing.T) {
				h := newHarness(t, bridgetest.Options{Flavor: f.flavor})
				for _, a := range []sasl.Client{
					sasl.NewPlainClient("", testUser, testPassword),
					sasl.NewLoginClient(testUser, testPassword),
				} {
					c := h.dial(t)
					if err := c.Auth(a); err != nil {
						t.Fatal(err)
					}
					if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
						t.Fatal(err)
					}
					c.Quit()
				}
				for _, m := range h.Gmail.WaitMessages(t, 2, 5*time.Second) {
					if !bytes.Equal(m.Data, []byte(testMessage)) {
						t.Errorf("data differs: %q", m.Data)
					}
				}
				if n := h.OAuth.RefreshRequests(); n != 1 {
					t.Errorf("refresh requests = %d, want 1", n)
				}
			})
			t.Run("revoked consent", func(t *testing.T) {
				h := newHarness(t, bridgetest.Options{Flavor: f.flavor})
				h.OAuth.RevokeAll()
				err := h.login(t).Mail(testAccount, nil)
				if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 535 ||
					!strings.Contains(se.Message, "bridge authorize "+testUser) {
					t.Fatalf("MAIL: %v, want 535 naming bridge authorize", err)
				}
			})
			t.Run("token endpoint down", func(t *testing.T) {
				h := newHarness(t, bridgetest.Options{Flavor: f.flavor})
				h.OAuth.SetTokenFault(fakeoauth.ServerError)
				err := h.login(t).Mail(testAccount, nil)
				if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 454 {
					t.Fatalf("MAIL: %v, want 454", err)
				}
			})
			t.Run("upstream drop mid-data", func(t *testing.T) {
				h := newHarness(t, bridgetest.Options{Flavor: f.flavor})
				h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageDataBody, AfterBytes: 50, Drop: true})
				_, err := send(h.login(t), testAccount, []string{"a@example.org"}, testMessage+strings.Repeat("x\r\n", 500))
				if se, ok := err.(*smtp.SMTPError); !ok || se.Code/100 != 4 {
					t.Fatalf("send: %v, want 4xx", err)
				}
				if n := len(h.Gmail.Messages()); n != 0 {
					t.Errorf("upstream recorded %d messages", n)
				}
			})
		})
	}
}
