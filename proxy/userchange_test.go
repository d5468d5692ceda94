package proxy

import (
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/internal/bridgetest"
)

// mailReply returns the reply code of MAIL FROM on c, or 250.
func mailReply(t *testing.T, c *smtp.Client, from string) int {
	t.Helper()
	err := c.Mail(from, nil)
	if err == nil {
		c.Reset()
		return 250
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("MAIL: %v", err)
	}
	return se.Code
}

func TestRemovedUserSessionGets530(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	c := h.login(t)
	if code := mailReply(t, c, testAccount); code != 250 {
		t.Fatalf("MAIL before the removal: %d", code)
	}

	if _, err := h.store.DeleteUser(testUser); err != nil {
		t.Fatal(err)
	}
	if code := mailReply(t, c, testAccount); code != 530 {
		t.Errorf("MAIL after the removal: %d, expected 530", code)
	}
	if err := c.Rcpt("rcpt@example.net", nil); err == nil {
		t.Error("RCPT after the removal was accepted")
	}
	if !strings.Contains(h.logs.String(), "the user was removed after it authenticated") {
		t.Errorf("no log line for the removed user:\n%s", h.logs.String())
	}
}

func TestChangedPasswordSessionGets530(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	c := h.login(t)

	u, err := h.store.User(testUser)
	if err != nil {
		t.Fatal(err)
	}
	u.PasswordHash, err = auth.HashPassword("a new password")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.PutUser(u); err != nil {
		t.Fatal(err)
	}
	if code := mailReply(t, c, testAccount); code != 530 {
		t.Errorf("MAIL after the password changed: %d, expected 530", code)
	}
}

func TestChangedAllowedSendersApplyInSession(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	c := h.login(t)
	if code := mailReply(t, c, "other@example.com"); code != 250 {
		t.Fatalf("MAIL before the change: %d", code)
	}

	u, err := h.store.User(testUser)
	if err != nil {
		t.Fatal(err)
	}
	u.AllowedSenders = []string{testAccount}
	if err := h.store.PutUser(u); err != nil {
		t.Fatal(err)
	}
	if code := mailReply(t, c, "other@example.com"); code != 550 {
		t.Errorf("MAIL from a sender no longer allowed: %d, expected 550", code)
	}
	if code := mailReply(t, c, testAccount); code != 250 {
		t.Errorf("MAIL from the allowed sender: %d, expected 250", code)
	}
}
