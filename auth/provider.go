// Package auth holds the OAuth 2.0 side of the bridge: providers, the
// consent flow, access token caching and refresh, the XOAUTH2 client
// mechanism, and local password checks.
//
// It implements RFC 6749 (OAuth 2.0), RFC 7636 (PKCE), RFC 8628 (device
// authorization grant), the XOAUTH2 SASL mechanism of Google and
// Microsoft, and the LOGIN SASL mechanism (draft-murchison-sasl-login).
package auth

import (
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"golang.org/x/oauth2"

	"github.com/bridgemail/bridge/config"
)

// Provider is a configured OAuth 2.0 provider and its submission server.
type Provider struct {
	Name string
	// Kind is config.KindGoogle or config.KindMicrosoft.
	Kind        string
	OAuth       *oauth2.Config
	UserinfoURL string
	Upstream    config.Upstream
	// RootCAs verifies the upstream certificate: the system roots plus
	// the upstream's CA file.
	RootCAs *x509.CertPool
}

// NewProvider builds a Provider from its configuration, reading the client
// secret file and the CA file.
func NewProvider(name string, c config.Provider) (*Provider, error) {
	secret := string(c.ClientSecret)
	if c.ClientSecretFile != "" {
		data, err := os.ReadFile(c.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("provider %s: reading client secret: %w", name, err)
		}
		secret = strings.TrimSpace(string(data))
	}

	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if c.Upstream.CAFile != "" {
		pem, err := os.ReadFile(c.Upstream.CAFile)
		if err != nil {
			return nil, fmt.Errorf("provider %s: reading CA file: %w", name, err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("provider %s: CA file %s contains no PEM certificate", name, c.Upstream.CAFile)
		}
	}

	return &Provider{
		Name: name,
		Kind: c.Kind,
		OAuth: &oauth2.Config{
			ClientID:     c.ClientID,
			ClientSecret: secret,
			Endpoint: oauth2.Endpoint{
				AuthURL:       c.AuthURL,
				TokenURL:      c.TokenURL,
				DeviceAuthURL: c.DeviceAuthURL,
				AuthStyle:     oauth2.AuthStyleInParams,
			},
			Scopes: c.Scopes,
		},
		UserinfoURL: c.UserinfoURL,
		Upstream:    c.Upstream,
		RootCAs:     roots,
	}, nil
}

// MailScope returns the scope that SMTP submission needs at this provider.
func (p *Provider) MailScope() string {
	if p.Kind == config.KindMicrosoft {
		return config.MicrosoftSMTPScope
	}
	return config.GoogleMailScope
}

// NewProviders builds every provider of the configuration, by name.
func NewProviders(cfg *config.Config) (map[string]*Provider, error) {
	providers := make(map[string]*Provider, len(cfg.Providers))
	for name, pc := range cfg.Providers {
		p, err := NewProvider(name, pc)
		if err != nil {
			return nil, err
		}
		providers[name] = p
	}
	return providers, nil
}
