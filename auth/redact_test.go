package auth

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

func TestXOAuth2ClientRedactedWhenLogged(t *testing.T) {
	const token = "ya29.a0PLANTED-ACCESS-TOKEN"
	c := &XOAuth2Client{User: "a@example.com", Token: token}
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %s %v\n", c, c, c, c, *c)
	slog.New(slog.NewTextHandler(&out, nil)).Info("text", "client", c)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("json", "client", c)
	if strings.Contains(out.String(), "PLANTED") {
		t.Errorf("output contains the token:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "a@example.com") {
		t.Errorf("output lacks the user:\n%s", out.String())
	}
}

func TestProviderRedactedWhenLogged(t *testing.T) {
	p := &Provider{Name: "google", OAuth: &oauth2.Config{ClientID: "id.example", ClientSecret: "GOCSPX-PLANTED"}}
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v\n", p, *p)
	slog.New(slog.NewTextHandler(&out, nil)).Info("text", "provider", p)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("json", "provider", p)
	if strings.Contains(out.String(), "PLANTED") {
		t.Errorf("output contains the client secret:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "id.example") {
		t.Errorf("output lacks the client id:\n%s", out.String())
	}
}
