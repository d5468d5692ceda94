package fakegmail

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

func TestMicrosoftTwoStepAccepted(t *testing.T) {
	token := strings.Repeat("eyJ0", 500)
	s := Start(t, Options{Flavor: Microsoft, CheckToken: func(user, tok string) bool { return tok == token }})
	r := dialRaw(t, s)
	r.reply()
	r.cmd("EHLO printer")
	r.startTLS(s)

	ehlo := r.cmd("EHLO printer")
	if !slices.Contains(ehlo, "250-AUTH LOGIN XOAUTH2") {
		t.Errorf("EHLO after TLS = %q", ehlo)
	}
	if got := r.cmd("AUTH XOAUTH2"); !slices.Equal(got, []string{"334 "}) {
		t.Fatalf("AUTH XOAUTH2 without response = %q, want an empty 334", got)
	}
	blob := base64.StdEncoding.EncodeToString([]byte("user=a@contoso.com\x01auth=Bearer " + token + "\x01\x01"))
	if got := r.cmd(blob); !slices.Equal(got, []string{"235 2.7.0 Authentication successful"}) {
		t.Errorf("reply to the response = %q", got)
	}
	if got := r.cmd("MAIL FROM:<a@contoso.com>"); got[0] != "250 2.1.0 Sender OK" {
		t.Errorf("MAIL = %q", got)
	}
}

func TestMicrosoftBadTokenDirect535(t *testing.T) {
	s := Start(t, Options{Flavor: Microsoft, CheckToken: tokenFor})
	r := dialRaw(t, s)
	r.reply()
	r.cmd("EHLO printer")
	r.startTLS(s)
	r.cmd("EHLO printer")

	ir := base64.StdEncoding.EncodeToString([]byte("user=a@contoso.com\x01auth=Bearer stale\x01\x01"))
	got := r.cmd("AUTH XOAUTH2 " + ir)
	want := []string{"535 5.7.3 Authentication unsuccessful [smtp.office365.com]"}
	if !slices.Equal(got, want) {
		t.Errorf("reply to a bad token = %q, want %q", got, want)
	}
	if s.AuthFailures() != 1 {
		t.Errorf("auth failures = %d, want 1", s.AuthFailures())
	}
}

func TestMicrosoftGoSMTPClientLongToken(t *testing.T) {
	token := strings.Repeat("eyJ0", 500)
	s := Start(t, Options{Flavor: Microsoft, CheckToken: func(user, tok string) bool { return tok == token }})
	c := dialClient(t, s)
	if err := c.Auth(&xoauth2Client{user: "a@contoso.com", token: token}); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := c.SendMail("a@contoso.com", []string{"b@contoso.com"}, strings.NewReader("x\r\n")); err != nil {
		t.Fatalf("sending: %v", err)
	}
}

func TestMicrosoftAuthDisabledForTenant(t *testing.T) {
	s := Start(t, Options{Flavor: Microsoft, CheckToken: tokenFor})
	s.AddFault(Fault{Stage: StageAuth, Reply: AuthDisabledForTenant})
	c := dialClient(t, s)

	err := c.Auth(&xoauth2Client{user: "a@contoso.com", token: "token-for-a@contoso.com"})
	if code := smtpCode(t, err); code != 535 {
		t.Errorf("code = %d, want 535", code)
	}
	if !strings.Contains(err.Error(), "SmtpClientAuthentication is disabled") {
		t.Errorf("error = %v", err)
	}
}
