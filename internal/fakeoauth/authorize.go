package fakeoauth

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// authCodeLifetime is how long an authorization code can be redeemed.
const authCodeLifetime = 10 * time.Minute

// authCode is an authorization code and the request it was issued for.
type authCode struct {
	clientID    string
	redirectURI string
	challenge   string
	scopes      []string
	email       string
	expiry      time.Time
	used        bool
}

// handleAuthorize serves the authorization endpoint. The consent step is
// skipped: a valid request redirects at once, as if the user had agreed
// (or done what SetConsent set).
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "authorization endpoint: method must be GET", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	redirect, scopes, err := s.checkAuthRequest(q)
	if err != nil {
		http.Error(w, "invalid authorization request: "+err.Error(), http.StatusBadRequest)
		return
	}

	s.mu.Lock()
	s.loginHint = q.Get("login_hint")
	consent := s.consent
	email := s.email(q.Get("login_hint"))
	s.mu.Unlock()

	state := q.Get("state")
	if consent.TamperState {
		state = "tampered-" + state
	}
	params := redirect.Query()
	params.Set("state", state)
	if consent.Deny {
		params.Set("error", "access_denied")
		redirect.RawQuery = params.Encode()
		http.Redirect(w, r, redirect.String(), http.StatusFound)
		return
	}

	if consent.UntickMail {
		scopes = slices.DeleteFunc(scopes, func(sc string) bool { return sc == s.mailScope() })
	}
	code := s.newAuthCode(&authCode{
		clientID:    q.Get("client_id"),
		redirectURI: q.Get("redirect_uri"),
		challenge:   q.Get("code_challenge"),
		scopes:      scopes,
		email:       email,
		expiry:      time.Now().Add(authCodeLifetime),
	})
	params.Set("code", code)
	if s.opts.Flavor == Google {
		params.Set("scope", joinScopes(scopes))
	}
	redirect.RawQuery = params.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// checkAuthRequest validates an authorization request and returns its
// redirect URI and requested scopes.
func (s *Server) checkAuthRequest(q url.Values) (*url.URL, []string, error) {
	if got := q.Get("client_id"); got != s.opts.ClientID {
		return nil, nil, fmt.Errorf("unknown client_id %q", got)
	}
	if got := q.Get("response_type"); got != "code" {
		return nil, nil, fmt.Errorf("response_type is %q, want code", got)
	}
	redirect, err := checkLoopbackRedirect(q.Get("redirect_uri"))
	if err != nil {
		return nil, nil, err
	}
	if got := q.Get("code_challenge_method"); got != "S256" {
		return nil, nil, fmt.Errorf("code_challenge_method is %q, want S256", got)
	}
	if n := len(q.Get("code_challenge")); n < 43 || n > 128 {
		return nil, nil, fmt.Errorf("code_challenge has %d characters, want 43 to 128", n)
	}
	scopes := strings.Fields(q.Get("scope"))
	for _, want := range s.Scopes() {
		if !slices.Contains(scopes, want) {
			return nil, nil, fmt.Errorf("scope %q lacks %q", q.Get("scope"), want)
		}
	}
	if q.Get("state") == "" {
		return nil, nil, fmt.Errorf("missing state")
	}
	if s.opts.Flavor == Google {
		if got := q.Get("access_type"); got != "offline" {
			return nil, nil, fmt.Errorf("access_type is %q, want offline", got)
		}
		if got := q.Get("prompt"); got != "consent" {
			return nil, nil, fmt.Errorf("prompt is %q, want consent", got)
		}
	}
	return redirect, scopes, nil
}

// checkLoopbackRedirect accepts http://127.0.0.1, http://[::1] and
// http://localhost, with any port and path, as native apps use (RFC 8252
// section 7.3).
func checkLoopbackRedirect(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("missing redirect_uri")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid redirect_uri %q: %v", raw, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("redirect_uri %q: scheme must be http", raw)
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("redirect_uri %q is not a loopback address", raw)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("redirect_uri %q has a fragment", raw)
	}
	return u, nil
}

func (s *Server) newAuthCode(c *authCode) string {
	code := "4/0" + randomString(48)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = c
	return code
}
