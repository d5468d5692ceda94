package fakeoauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

const redirectURL = "http://127.0.0.1:49152/callback"

// noRedirect is a client that returns redirects instead of following them.
var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// authorize sends the authorization request of cfg and returns the query
// of the redirect.
func authorize(t *testing.T, cfg *oauth2.Config, verifier string, opts ...oauth2.AuthCodeOption) url.Values {
	t.Helper()
	opts = append([]oauth2.AuthCodeOption{
		oauth2.AccessTypeOffline, oauth2.ApprovalForce, oauth2.S256ChallengeOption(verifier),
	}, opts...)
	resp, err := noRedirect.Get(cfg.AuthCodeURL("state-123", opts...))
	if err != nil {
		t.Fatalf("authorization request: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorization status = %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(loc.String(), cfg.RedirectURL+"?") {
		t.Fatalf("redirect to %q, want %q", loc, cfg.RedirectURL)
	}
	return loc.Query()
}

// login runs the authorization code flow with PKCE and returns the token.
func login(t *testing.T, s *Server) *oauth2.Token {
	t.Helper()
	cfg := s.Config(redirectURL)
	verifier := oauth2.GenerateVerifier()
	q := authorize(t, cfg, verifier)
	tok, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging code: %v", err)
	}
	return tok
}

// retrieveError returns the *oauth2.RetrieveError in err.
func retrieveError(t *testing.T, err error) *oauth2.RetrieveError {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not *oauth2.RetrieveError", err, err)
	}
	return re
}

// jwtClaims decodes the payload of a JWT without checking it.
func jwtClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT has %d parts, want 3", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decoding JWT payload: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("parsing JWT payload: %v", err)
	}
	return claims
}

// postForm sends a form to url and returns the status and JSON body.
func postForm(t *testing.T, url string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(url, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decoding response: %v", err)
	}
	return resp.StatusCode, body
}
