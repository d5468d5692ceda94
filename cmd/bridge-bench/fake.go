package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/bridgemail/bridge/internal/fakegmail"
	"github.com/bridgemail/bridge/internal/fakeoauth"
	"github.com/bridgemail/bridge/internal/testcert"
)

// fakeInfo is the fake process's addresses and client credentials, which
// it writes on its standard output once it listens.
type fakeInfo struct {
	SMTPAddr     string   `json:"smtp_addr"`
	CAFile       string   `json:"ca_file"`
	TokenURL     string   `json:"token_url"`
	AuthURL      string   `json:"auth_url"`
	UserinfoURL  string   `json:"userinfo_url"`
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret"`
	Scopes       []string `json:"scopes"`
	// RefreshToken is issued for benchAccount, as if it had consented.
	RefreshToken string `json:"refresh_token"`
}

// runFake serves a fake Google token endpoint and a fake Gmail that
// requires STARTTLS and XOAUTH2, in a process of its own so that its CPU
// time is not counted as the bridge's or the sender's. It runs until its
// standard input closes, which happens when the parent exits.
func runFake(dir string) error {
	certs, err := testcert.Generate(dir)
	if err != nil {
		return err
	}
	oauth := fakeoauth.New(fakeoauth.Options{Flavor: fakeoauth.Google})
	defer oauth.Close()
	gmail, err := fakegmail.New(fakegmail.Options{
		Flavor:     fakegmail.Gmail,
		TLS:        fakegmail.StartTLS,
		Certs:      certs,
		CheckToken: oauth.ValidAccessToken,
		// The benchmark never reads the messages, so the fake keeps
		// only their envelopes.
		DiscardData: true,
	})
	if err != nil {
		return err
	}
	defer gmail.Close()

	info := fakeInfo{
		SMTPAddr:     gmail.Addr(),
		CAFile:       certs.CAFile,
		TokenURL:     oauth.TokenURL(),
		AuthURL:      oauth.AuthURL(),
		UserinfoURL:  oauth.UserinfoURL(),
		ClientID:     oauth.ClientID(),
		ClientSecret: oauth.ClientSecret(),
		Scopes:       oauth.Scopes(),
		RefreshToken: oauth.IssueRefreshToken(benchAccount),
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(info); err != nil {
		return fmt.Errorf("writing fake addresses: %w", err)
	}
	// Each line "stats" asks for the counters so far.
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "stats" {
			continue
		}
		stats := fakeStats{Conns: gmail.Conns(), Logins: gmail.AuthAttempts(), Messages: len(gmail.Messages())}
		if err := out.Encode(stats); err != nil {
			return fmt.Errorf("writing fake counters: %w", err)
		}
	}
	return nil
}

// fakeStats are the fake Gmail's counters since it started.
type fakeStats struct {
	Conns    int `json:"conns"`
	Logins   int `json:"logins"`
	Messages int `json:"messages"`
}
