// Package config defines the bridge's YAML configuration: its schema, its
// defaults and its validation.
//
// Load decodes strictly, so an unknown key is an error that names its line,
// and Validate reports every problem of a file at once.
package config

import (
	"net/netip"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	Listeners []Listener          `yaml:"listeners"`
	Store     Store               `yaml:"store"`
	Providers map[string]Provider `yaml:"providers"`
	Limits    Limits              `yaml:"limits"`
	Throttle  Throttle            `yaml:"throttle"`
	Pool      Pool                `yaml:"pool"`
	Log       Log                 `yaml:"log"`
	// TrustedClients lets clients that cannot log in send as a user.
	TrustedClients []TrustedClient `yaml:"trusted_clients"`

	// Path is the file the configuration was loaded from; it is not a key.
	Path string `yaml:"-"`
}

// TLS modes of a listener or an upstream connection.
const (
	TLSNone     = "none"
	TLSStartTLS = "starttls"
	TLSImplicit = "implicit"
)

// Listener is one address that accepts SMTP submissions.
type Listener struct {
	Address string `yaml:"address"`
	// TLS is none, starttls or implicit.
	TLS      string `yaml:"tls"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MinTLSVersion is "1.0", "1.1", "1.2" or "1.3".
	MinTLSVersion string `yaml:"min_tls_version"`
	// InsecureAuth allows AUTH over plaintext on a non-loopback address,
	// and before STARTTLS on a starttls listener.
	InsecureAuth bool `yaml:"insecure_auth"`
	// Hostname is sent in the greeting and the EHLO reply.
	Hostname string `yaml:"hostname"`

	line int
}

// Store locates the database, the key that seals refresh tokens and the
// admin socket.
type Store struct {
	Path        string `yaml:"path"`
	KeyFile     string `yaml:"key_file"`
	AdminSocket string `yaml:"admin_socket"`
}

// Provider kinds.
const (
	KindGoogle    = "google"
	KindMicrosoft = "microsoft"
)

// Provider is an OAuth 2.0 identity provider and the SMTP submission server
// that accepts its access tokens.
type Provider struct {
	// Kind is google or microsoft; it defaults to the provider's name when
	// that is one of those.
	Kind             string `yaml:"kind"`
	ClientID         string `yaml:"client_id"`
	ClientSecret     Secret `yaml:"client_secret"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// Tenant is the Microsoft tenant: common, organizations, consumers or
	// a tenant id.
	Tenant        string   `yaml:"tenant"`
	AuthURL       string   `yaml:"auth_url"`
	TokenURL      string   `yaml:"token_url"`
	DeviceAuthURL string   `yaml:"device_auth_url"`
	UserinfoURL   string   `yaml:"userinfo_url"`
	Scopes        []string `yaml:"scopes"`
	Upstream      Upstream `yaml:"upstream"`

	line int
}

// Upstream is the provider's SMTP submission server.
type Upstream struct {
	Address string `yaml:"address"`
	// TLS is implicit (port 465) or starttls (port 587).
	TLS string `yaml:"tls"`
	// ServerName is the name the certificate is verified against; it
	// defaults to the host of Address.
	ServerName string `yaml:"server_name"`
	// CAFile holds PEM certificates trusted besides the system roots.
	CAFile string `yaml:"ca_file"`
}

// Limits bound what a client may send and how long each step may take.
type Limits struct {
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	MaxRecipients   int   `yaml:"max_recipients"`
	// ReadTimeout bounds each client command and the whole DATA body,
	// because go-smtp sets the deadline once per command.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// UpstreamTimeout bounds each command sent upstream.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// UpstreamDataTimeout bounds the upstream reply to the end of DATA.
	UpstreamDataTimeout time.Duration `yaml:"upstream_data_timeout"`
	DialTimeout         time.Duration `yaml:"dial_timeout"`
	TokenTimeout        time.Duration `yaml:"token_timeout"`
	// ShutdownGrace is how long a stopping server lets transactions in
	// flight finish.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// MaxConnections bounds concurrent client connections per listener;
	// 0 means no limit.
	MaxConnections int `yaml:"max_connections"`
}

// Throttle slows down and then locks out repeated AUTH failures.
type Throttle struct {
	// FreeFailures is the number of failures before delays start.
	FreeFailures int           `yaml:"free_failures"`
	BaseDelay    time.Duration `yaml:"base_delay"`
	MaxDelay     time.Duration `yaml:"max_delay"`
	// LockoutAfter is the number of failures that starts a lockout.
	LockoutAfter int           `yaml:"lockout_after"`
	Lockout      time.Duration `yaml:"lockout"`
	// Window is how long a failure counts.
	Window time.Duration `yaml:"window"`
}

// Pool bounds the authenticated upstream connections kept for reuse.
type Pool struct {
	// MaxConns is the number of upstream connections open at once per
	// account, in use and idle together. Sessions beyond it wait for a
	// connection, up to limits.dial_timeout.
	MaxConns int `yaml:"max_conns"`
	// MaxIdle is the number of idle connections kept per account; a
	// negative value turns reuse off.
	MaxIdle     int           `yaml:"max_idle"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// RefreshMargin is how long before expiry the access token of an
	// account in use is refreshed in the background.
	RefreshMargin time.Duration `yaml:"refresh_margin"`
}

// TrustedClient lets a client that cannot log in, such as a printer
// without SMTP AUTH, send as User when it connects from one of Networks.
// Every other client must log in.
type TrustedClient struct {
	User string `yaml:"user"`
	// Networks lists CIDR prefixes, such as 10.1.2.3/32, or single
	// addresses. Empty means loopback only: 127.0.0.0/8 and ::1.
	Networks []string `yaml:"networks"`

	// prefixes are the parsed Networks, set by validation.
	prefixes []netip.Prefix
}

// DefaultTrustedNetworks are the networks of a trusted client that lists
// none: loopback only.
var DefaultTrustedNetworks = []string{"127.0.0.0/8", "::1/128"}

// TrustedUser returns the user that a client connecting from addr sends
// as without AUTH, if a trusted_clients entry covers addr.
func (c *Config) TrustedUser(addr netip.Addr) (string, bool) {
	addr = addr.Unmap().WithZone("")
	for _, tc := range c.TrustedClients {
		for _, p := range tc.prefixes {
			if p.Contains(addr) {
				return tc.User, true
			}
		}
	}
	return "", false
}

// Log selects the log level and format.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Secret is a string that prints as a placeholder, so a config dumped to a
// log never shows it.
type Secret string

// String returns a placeholder unless the secret is empty.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString returns the same placeholder as String.
func (s Secret) GoString() string { return s.String() }
