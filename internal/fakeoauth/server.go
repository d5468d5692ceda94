// Package fakeoauth is a fake OAuth 2.0 authorization server for tests. It
// serves the authorization, token, userinfo and device authorization
// endpoints as Google or the Microsoft identity platform (v2.0) do for an
// installed mail client. It implements the authorization code grant with
// PKCE (RFC 6749, RFC 7636) and a loopback redirect URI (RFC 8252), the
// refresh token grant and, for Microsoft, the device authorization grant
// (RFC 8628).
//
// Access tokens it issues can be checked by fakegmail through
// ValidAccessToken. The server listens on 127.0.0.1 over plain HTTP.
package fakeoauth

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// Flavor selects whose endpoints the server copies.
type Flavor int

const (
	// Google is accounts.google.com and oauth2.googleapis.com.
	Google Flavor = iota
	// Microsoft is login.microsoftonline.com with the common tenant.
	Microsoft
)

// Scopes that an installed mail client requests.
const (
	GoogleMailScope    = "https://mail.google.com/"
	MicrosoftMailScope = "https://outlook.office.com/SMTP.Send"
)

// Defaults for Options.
const (
	DefaultClientID            = "bridge-test-client.apps.example.com"
	DefaultClientSecret        = "bridge-test-secret"
	DefaultEmail               = "user@example.com"
	DefaultAccessTokenLifetime = 3599 * time.Second
	DefaultDeviceInterval      = 1 // seconds
)

// Options configures a Server.
type Options struct {
	Flavor Flavor
	// ClientID is the only client the server accepts. Empty means
	// DefaultClientID.
	ClientID string
	// ClientSecret is the secret the client must send. Empty means
	// DefaultClientSecret for Google and a public client for Microsoft,
	// which must send no secret at all.
	ClientSecret string
	// AccessTokenLifetime is the expires_in of access tokens. Zero means
	// DefaultAccessTokenLifetime.
	AccessTokenLifetime time.Duration
	// Email is the account that consents. Empty means the login_hint of
	// the authorization request, or else DefaultEmail.
	Email string
	// DeviceInterval is the polling interval in seconds returned by the
	// device authorization endpoint. Zero means DefaultDeviceInterval.
	DeviceInterval int
	// DeviceApproveAfterPolls approves a device code on that poll of the
	// token endpoint. Zero means only ApproveDevice approves.
	DeviceApproveAfterPolls int
	// DeviceSlowDownPolls is the number of first polls of a device code
	// that get slow_down.
	DeviceSlowDownPolls int
}

// Consent sets what the user does on the consent screen.
type Consent struct {
	// Deny redirects with error=access_denied.
	Deny bool
	// UntickMail grants every requested scope except the mail scope, as
	// Google's granular consent lets a user do.
	UntickMail bool
	// TamperState redirects with a state that differs from the request's.
	TamperState bool
}

// TokenFault makes the token endpoint fail.
type TokenFault int

const (
	// NoFault handles token requests normally.
	NoFault TokenFault = iota
	// ServerError returns HTTP 500 and a text body.
	ServerError
	// BrokenJSON returns HTTP 200 and a truncated JSON body.
	BrokenJSON
	// InvalidGrant rejects every grant with invalid_grant.
	InvalidGrant
)

// Request is a request the server received.
type Request struct {
	Method, Path string
	// Form is the query of a GET or the form body of a POST.
	Form   url.Values
	Header http.Header
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	opts      Options
	http      *httptest.Server
	done      chan struct{}
	closeOnce sync.Once

	mu           sync.Mutex
	consent      Consent
	tokenFault   TokenFault
	tokenDelay   time.Duration
	requests     []Request
	loginHint    string
	codes        map[string]*authCode
	refresh      map[string]*grant
	access       map[string]*accessGrant
	devices      map[string]*device // by device code
	lastUserCode string
	tokenReqs    int
	refreshReqs  int
}

// grant is the account and scopes behind a refresh token.
type grant struct {
	email   string
	scopes  []string
	revoked bool
}

type accessGrant struct {
	email   string
	scopes  []string
	expiry  time.Time
	expired bool
}

// Start runs a server on 127.0.0.1 until the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := New(opts)
	t.Cleanup(s.Close)
	return s
}

// New runs a server on 127.0.0.1 until Close, for programs outside tests
// such as a benchmark.
func New(opts Options) *Server {
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	if opts.ClientSecret == "" && opts.Flavor == Google {
		opts.ClientSecret = DefaultClientSecret
	}
	if opts.AccessTokenLifetime == 0 {
		opts.AccessTokenLifetime = DefaultAccessTokenLifetime
	}
	if opts.DeviceInterval == 0 {
		opts.DeviceInterval = DefaultDeviceInterval
	}

	s := &Server{
		opts:    opts,
		done:    make(chan struct{}),
		codes:   map[string]*authCode{},
		refresh: map[string]*grant{},
		access:  map[string]*accessGrant{},
		devices: map[string]*device{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(s.authPath(), s.handleAuthorize)
	mux.HandleFunc(s.tokenPath(), s.handleToken)
	mux.HandleFunc(s.userinfoPath(), s.handleUserinfo)
	mux.HandleFunc(s.devicePath(), s.handleDeviceAuth)
	s.http = httptest.NewServer(s.record(mux))
	return s
}

// Close stops the server. Start registers it with t.Cleanup; calling it
// again does nothing.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.http.Close()
	})
}

func (s *Server) authPath() string {
	if s.opts.Flavor == Microsoft {
		return "/common/oauth2/v2.0/authorize"
	}
	return "/o/oauth2/v2/auth"
}

func (s *Server) tokenPath() string {
	if s.opts.Flavor == Microsoft {
		return "/common/oauth2/v2.0/token"
	}
	return "/token"
}

func (s *Server) devicePath() string {
	if s.opts.Flavor == Microsoft {
		return "/common/oauth2/v2.0/devicecode"
	}
	return "/device/code"
}

func (s *Server) userinfoPath() string {
	if s.opts.Flavor == Microsoft {
		return "/oidc/userinfo"
	}
	return "/v1/userinfo"
}

// AuthURL returns the URL of the authorization endpoint.
func (s *Server) AuthURL() string { return s.http.URL + s.authPath() }

// TokenURL returns the URL of the token endpoint.
func (s *Server) TokenURL() string { return s.http.URL + s.tokenPath() }

// UserinfoURL returns the URL of the OpenID Connect userinfo endpoint.
func (s *Server) UserinfoURL() string { return s.http.URL + s.userinfoPath() }

// DeviceAuthURL returns the URL of the device authorization endpoint.
// The Google flavour rejects the mail scope there, as Google does.
func (s *Server) DeviceAuthURL() string { return s.http.URL + s.devicePath() }

// Endpoint returns the server's endpoints for an oauth2.Config. Client
// credentials go in the form body, so every request is a single POST.
func (s *Server) Endpoint() oauth2.Endpoint {
	return oauth2.Endpoint{
		AuthURL:       s.AuthURL(),
		TokenURL:      s.TokenURL(),
		DeviceAuthURL: s.DeviceAuthURL(),
		AuthStyle:     oauth2.AuthStyleInParams,
	}
}

// Scopes returns the scopes an installed mail client requests from this
// flavour.
func (s *Server) Scopes() []string {
	if s.opts.Flavor == Microsoft {
		return []string{MicrosoftMailScope, "offline_access", "openid", "email"}
	}
	return []string{GoogleMailScope, "openid", "email"}
}

// ClientID returns the client id the server accepts.
func (s *Server) ClientID() string { return s.opts.ClientID }

// ClientSecret returns the client secret the server expects, empty for a
// public client.
func (s *Server) ClientSecret() string { return s.opts.ClientSecret }

// Config returns a client configuration for this server with the given
// redirect URI.
func (s *Server) Config(redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     s.opts.ClientID,
		ClientSecret: s.opts.ClientSecret,
		Endpoint:     s.Endpoint(),
		RedirectURL:  redirectURL,
		Scopes:       s.Scopes(),
	}
}

// SetConsent sets what the user does on later consent screens.
func (s *Server) SetConsent(c Consent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.consent = c
}

// SetEmail sets the account that consents from now on.
func (s *Server) SetEmail(email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Email = email
}

// SetTokenFault makes the token endpoint fail from now on. NoFault ends it.
func (s *Server) SetTokenFault(f TokenFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenFault = f
}

// SetTokenDelay delays every later token endpoint response by d, or until
// the client gives up. Zero ends it.
func (s *Server) SetTokenDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenDelay = d
}

// Requests returns a copy of every request received, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// LastForm returns the form of the last token endpoint request, or nil.
func (s *Server) LastForm() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.requests) - 1; i >= 0; i-- {
		if s.requests[i].Path == s.tokenPath() {
			return s.requests[i].Form
		}
	}
	return nil
}

// LoginHint returns the login_hint of the last authorization request.
func (s *Server) LoginHint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loginHint
}

// TokenRequests returns the number of token endpoint requests, of any
// grant and outcome.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenReqs
}

// RefreshRequests returns the number of refresh token grant requests.
func (s *Server) RefreshRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshReqs
}

// record stores each request with its parsed form before serving it.
func (s *Server) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "invalid form: "+err.Error(), http.StatusBadRequest)
			return
		}
		form := url.Values{}
		for k, v := range r.Form {
			form[k] = append([]string(nil), v...)
		}
		s.mu.Lock()
		s.requests = append(s.requests, Request{
			Method: r.Method,
			Path:   r.URL.Path,
			Form:   form,
			Header: r.Header.Clone(),
		})
		s.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// email returns the account that consents to a request with loginHint.
func (s *Server) email(loginHint string) string {
	switch {
	case s.opts.Email != "":
		return s.opts.Email
	case loginHint != "":
		return loginHint
	}
	return DefaultEmail
}

func (s *Server) mailScope() string {
	if s.opts.Flavor == Microsoft {
		return MicrosoftMailScope
	}
	return GoogleMailScope
}

func hasScope(scopes []string, want string) bool { return slices.Contains(scopes, want) }

func joinScopes(scopes []string) string { return strings.Join(scopes, " ") }
