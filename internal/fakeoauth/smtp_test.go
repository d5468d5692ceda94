package fakeoauth_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bridgemail/bridge/internal/fakegmail"
	"github.com/bridgemail/bridge/internal/fakeoauth"
	"github.com/emersion/go-smtp"
	"golang.org/x/oauth2"
)

// xoauth2Client is a minimal SASL XOAUTH2 client that answers an error
// challenge with the empty response.
type xoauth2Client struct{ user, token string }

func (c xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

func (c xoauth2Client) Next([]byte) ([]byte, error) { return []byte{}, nil }

func sendWithToken(t *testing.T, srv *fakegmail.Server, user, token string) error {
	t.Helper()
	c, err := smtp.DialStartTLS(srv.Addr(), srv.ClientTLS("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(xoauth2Client{user, token}); err != nil {
		return err
	}
	return c.SendMail(user, []string{"b@example.com"}, strings.NewReader("Subject: t\r\n\r\nhi\r\n"))
}

func TestFakeGmailChecksIssuedTokens(t *testing.T) {
	oauth := fakeoauth.Start(t, fakeoauth.Options{})
	srv := fakegmail.Start(t, fakegmail.Options{CheckToken: oauth.ValidAccessToken})
	refresh := oauth.IssueRefreshToken("alice@gmail.com")
	tok, err := oauth.Config("http://127.0.0.1:1/").TokenSource(context.Background(),
		&oauth2.Token{RefreshToken: refresh}).Token()
	if err != nil {
		t.Fatal(err)
	}

	if err := sendWithToken(t, srv, "alice@gmail.com", tok.AccessToken); err != nil {
		t.Fatalf("sending with a fresh token: %v", err)
	}
	oauth.ExpireAccessTokens()
	err = sendWithToken(t, srv, "alice@gmail.com", tok.AccessToken)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 535 {
		t.Errorf("sending with an expired token: %v, want 535", err)
	}
}

func TestFakeMicrosoftAcceptsLongToken(t *testing.T) {
	oauth := fakeoauth.Start(t, fakeoauth.Options{Flavor: fakeoauth.Microsoft})
	srv := fakegmail.Start(t, fakegmail.Options{Flavor: fakegmail.Microsoft, CheckToken: oauth.ValidAccessToken})
	token := oauth.IssueAccessToken("a@contoso.com")

	if err := sendWithToken(t, srv, "a@contoso.com", token); err != nil {
		t.Fatalf("sending with a %d-character token: %v", len(token), err)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
}
