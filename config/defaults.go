package config

import (
	"strings"
	"time"
)

// Defaults for keys the file leaves out. The timeouts follow the minimums
// of RFC 5321 section 4.5.3.2 where it gives one.
const (
	DefaultListenAddress = "127.0.0.1:2525"
	// DefaultMaxMessageBytes is the SIZE that smtp.gmail.com advertises.
	DefaultMaxMessageBytes = 35882577
	// DefaultMaxRecipients is Google Workspace's limit of recipients per
	// message sent over SMTP.
	DefaultMaxRecipients       = 100
	DefaultReadTimeout         = 10 * time.Minute
	DefaultWriteTimeout        = time.Minute
	DefaultUpstreamTimeout     = 5 * time.Minute
	DefaultUpstreamDataTimeout = 10 * time.Minute
	DefaultDialTimeout         = 30 * time.Second
	DefaultTokenTimeout        = 30 * time.Second
	DefaultShutdownGrace       = 30 * time.Second

	DefaultStorePath   = "bridge.db"
	DefaultKeyFile     = "bridge.key"
	DefaultAdminSocket = "admin.sock"

	// DefaultPoolMaxConns stays below the 10 simultaneous IMAP
	// connections that Gmail allows per account (Gmail Help, "Too many
	// simultaneous connections").
	// NOTE: Gmail documents no limit for SMTP connections; this one is
	// an estimate.
	DefaultPoolMaxConns = 8
	// DefaultPoolMaxIdle equals DefaultPoolMaxConns: an idle connection
	// closes after the idle timeout anyway, and keeping fewer makes a
	// busy account log in again. bridge-bench counted 19 logins for 800
	// messages from 16 clients with 4, and 8 with 8.
	DefaultPoolMaxIdle     = 8
	DefaultPoolIdleTimeout = 60 * time.Second
	DefaultRefreshMargin   = 5 * time.Minute

	DefaultThrottleFreeFailures = 3
	DefaultThrottleBaseDelay    = time.Second
	DefaultThrottleMaxDelay     = 8 * time.Second
	DefaultThrottleLockoutAfter = 10
	DefaultThrottleLockout      = 15 * time.Minute
	DefaultThrottleWindow       = 15 * time.Minute
)

// OAuth 2.0 scopes for SMTP submission.
const (
	GoogleMailScope    = "https://mail.google.com/"
	MicrosoftSMTPScope = "https://outlook.office.com/SMTP.Send"
)

// Google's endpoints and submission server.
const (
	GoogleAuthURL     = "https://accounts.google.com/o/oauth2/v2/auth"
	GoogleTokenURL    = "https://oauth2.googleapis.com/token"
	GoogleUserinfoURL = "https://openidconnect.googleapis.com/v1/userinfo"
	GoogleSMTPAddress = "smtp.gmail.com:465"
)

// Microsoft identity platform endpoints, with {tenant} replaced by the
// provider's tenant, and Exchange Online's submission server.
const (
	MicrosoftAuthURL       = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"
	MicrosoftTokenURL      = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
	MicrosoftDeviceAuthURL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode"
	MicrosoftUserinfoURL   = "https://graph.microsoft.com/oidc/userinfo"
	MicrosoftSMTPAddress   = "smtp.office365.com:587"
	DefaultTenant          = "common"
)

// applyDefaults fills every key the file left empty.
func (c *Config) applyDefaults() {
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Address: DefaultListenAddress}}
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.TLS == "" {
			l.TLS = TLSNone
		}
		if l.MinTLSVersion == "" {
			l.MinTLSVersion = "1.2"
		}
	}

	setString(&c.Store.Path, DefaultStorePath)
	setString(&c.Store.KeyFile, DefaultKeyFile)
	setString(&c.Store.AdminSocket, DefaultAdminSocket)

	for name, p := range c.Providers {
		p.applyDefaults(name)
		c.Providers[name] = p
	}

	lim := &c.Limits
	setInt64(&lim.MaxMessageBytes, DefaultMaxMessageBytes)
	setInt(&lim.MaxRecipients, DefaultMaxRecipients)
	setDuration(&lim.ReadTimeout, DefaultReadTimeout)
	setDuration(&lim.WriteTimeout, DefaultWriteTimeout)
	setDuration(&lim.UpstreamTimeout, DefaultUpstreamTimeout)
	setDuration(&lim.UpstreamDataTimeout, DefaultUpstreamDataTimeout)
	setDuration(&lim.DialTimeout, DefaultDialTimeout)
	setDuration(&lim.TokenTimeout, DefaultTokenTimeout)
	setDuration(&lim.ShutdownGrace, DefaultShutdownGrace)

	th := &c.Throttle
	setInt(&th.FreeFailures, DefaultThrottleFreeFailures)
	setDuration(&th.BaseDelay, DefaultThrottleBaseDelay)
	setDuration(&th.MaxDelay, DefaultThrottleMaxDelay)
	setInt(&th.LockoutAfter, DefaultThrottleLockoutAfter)
	setDuration(&th.Lockout, DefaultThrottleLockout)
	setDuration(&th.Window, DefaultThrottleWindow)

	setInt(&c.Pool.MaxConns, DefaultPoolMaxConns)
	setInt(&c.Pool.MaxIdle, DefaultPoolMaxIdle)
	setDuration(&c.Pool.IdleTimeout, DefaultPoolIdleTimeout)
	setDuration(&c.Pool.RefreshMargin, DefaultRefreshMargin)

	for i := range c.TrustedClients {
		if len(c.TrustedClients[i].Networks) == 0 {
			c.TrustedClients[i].Networks = append([]string(nil), DefaultTrustedNetworks...)
		}
	}

	setString(&c.Log.Level, "info")
	setString(&c.Log.Format, "text")
}

func (p *Provider) applyDefaults(name string) {
	if p.Kind == "" && (name == KindGoogle || name == KindMicrosoft) {
		p.Kind = name
	}
	switch p.Kind {
	case KindGoogle:
		setString(&p.AuthURL, GoogleAuthURL)
		setString(&p.TokenURL, GoogleTokenURL)
		setString(&p.UserinfoURL, GoogleUserinfoURL)
		if len(p.Scopes) == 0 {
			p.Scopes = []string{GoogleMailScope, "openid", "email"}
		}
		setString(&p.Upstream.Address, GoogleSMTPAddress)
	case KindMicrosoft:
		setString(&p.Tenant, DefaultTenant)
		setString(&p.AuthURL, withTenant(MicrosoftAuthURL, p.Tenant))
		setString(&p.TokenURL, withTenant(MicrosoftTokenURL, p.Tenant))
		setString(&p.DeviceAuthURL, withTenant(MicrosoftDeviceAuthURL, p.Tenant))
		setString(&p.UserinfoURL, MicrosoftUserinfoURL)
		if len(p.Scopes) == 0 {
			p.Scopes = []string{MicrosoftSMTPScope, "offline_access", "openid", "email"}
		}
		setString(&p.Upstream.Address, MicrosoftSMTPAddress)
	}
	if p.Upstream.TLS == "" {
		p.Upstream.TLS = TLSImplicit
		if strings.HasSuffix(p.Upstream.Address, ":587") {
			p.Upstream.TLS = TLSStartTLS
		}
	}
}

func withTenant(url, tenant string) string {
	return strings.ReplaceAll(url, "{tenant}", tenant)
}

func setString(v *string, def string) {
	if *v == "" {
		*v = def
	}
}

func setInt(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}

func setInt64(v *int64, def int64) {
	if *v == 0 {
		*v = def
	}
}

func setDuration(v *time.Duration, def time.Duration) {
	if *v == 0 {
		*v = def
	}
}
