package fakeoauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// oauthError is an error response of the token endpoint (RFC 6749 section
// 5.2).
type oauthError struct {
	status      int
	code        string
	description string
	// aadsts is the Microsoft error number, sent as error_codes.
	aadsts int
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "token endpoint: method must be POST", http.StatusMethodNotAllowed)
		return
	}

	s.mu.Lock()
	s.tokenReqs++
	if r.PostForm.Get("grant_type") == "refresh_token" {
		s.refreshReqs++
	}
	fault, delay := s.tokenFault, s.tokenDelay
	s.mu.Unlock()

	if !s.wait(r, delay) {
		return
	}
	switch fault {
	case ServerError:
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	case BrokenJSON:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprint(w, `{"access_token": "ya29.trunc`)
		return
	case InvalidGrant:
		s.writeError(w, s.invalidGrant())
		return
	}

	if e := s.checkClient(r); e != nil {
		s.writeError(w, e)
		return
	}
	var body map[string]any
	var e *oauthError
	switch grantType := r.PostForm.Get("grant_type"); grantType {
	case "authorization_code":
		body, e = s.redeemCode(r.PostForm)
	case "refresh_token":
		body, e = s.redeemRefreshToken(r.PostForm)
	case deviceCodeGrant:
		body, e = s.redeemDeviceCode(r.PostForm)
	default:
		e = &oauthError{
			status:      http.StatusBadRequest,
			code:        "unsupported_grant_type",
			description: fmt.Sprintf("Invalid grant_type: %s", grantType),
			aadsts:      70003,
		}
	}
	if e != nil {
		s.writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// wait sleeps for d and returns false if the client or the server gave up
// meanwhile.
func (s *Server) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-r.Context().Done():
	case <-s.done:
	}
	return false
}

// checkClient authenticates the client from the form body or HTTP Basic
// authentication (RFC 6749 section 2.3.1).
func (s *Server) checkClient(r *http.Request) *oauthError {
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if user, pass, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(user)
		secret, _ = url.QueryUnescape(pass)
	}

	if id != s.opts.ClientID {
		if s.opts.Flavor == Microsoft {
			return &oauthError{http.StatusBadRequest, "unauthorized_client",
				fmt.Sprintf("AADSTS700016: Application with identifier '%s' was not found in the directory.", id),
				700016}
		}
		return &oauthError{status: http.StatusUnauthorized, code: "invalid_client",
			description: "The OAuth client was not found."}
	}
	switch {
	case s.opts.Flavor == Microsoft && s.opts.ClientSecret == "" && secret != "":
		return &oauthError{http.StatusUnauthorized, "invalid_client",
			"AADSTS7000215: Invalid client secret provided. The application is a public client, " +
				"so the request must not contain a client_secret.", 7000215}
	case s.opts.ClientSecret == "":
		return nil
	case secret == "" && s.opts.Flavor == Google:
		return &oauthError{status: http.StatusBadRequest, code: "invalid_request",
			description: "client_secret is missing."}
	case subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) != 1:
		if s.opts.Flavor == Microsoft {
			return &oauthError{http.StatusUnauthorized, "invalid_client",
				"AADSTS7000215: Invalid client secret provided.", 7000215}
		}
		return &oauthError{status: http.StatusUnauthorized, code: "invalid_client",
			description: "Unauthorized"}
	}
	return nil
}

func (s *Server) redeemCode(form url.Values) (map[string]any, *oauthError) {
	s.mu.Lock()
	c, ok := s.codes[form.Get("code")]
	valid := ok && !c.used && time.Now().Before(c.expiry)
	if valid {
		c.used = true
	}
	s.mu.Unlock()

	// NOTE: the error descriptions for a bad code, redirect URI and
	// verifier follow Google's style, but their exact wording is unchecked.
	switch {
	case !valid:
		return nil, &oauthError{status: http.StatusBadRequest, code: "invalid_grant",
			description: "Malformed auth code.", aadsts: 70000}
	case form.Get("redirect_uri") != c.redirectURI:
		return nil, &oauthError{status: http.StatusBadRequest, code: "redirect_uri_mismatch",
			description: "Bad Request", aadsts: 50148}
	case !verifierMatches(form.Get("code_verifier"), c.challenge):
		return nil, &oauthError{status: http.StatusBadRequest, code: "invalid_grant",
			description: "Invalid code verifier.", aadsts: 501481}
	}

	body := s.issueTokens(c.email, c.scopes)
	if hasScope(c.scopes, "offline_access") || s.opts.Flavor == Google {
		body["refresh_token"] = s.newRefreshToken(c.email, c.scopes)
	}
	return body, nil
}

// verifierMatches checks a PKCE code_verifier against an S256 challenge
// (RFC 7636 section 4.6).
func verifierMatches(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}

func (s *Server) redeemRefreshToken(form url.Values) (map[string]any, *oauthError) {
	old := form.Get("refresh_token")
	s.mu.Lock()
	g, ok := s.refresh[old]
	valid := ok && !g.revoked
	if valid && s.opts.Flavor == Microsoft {
		// Microsoft rotates refresh tokens: the old one stops working.
		g.revoked = true
	}
	s.mu.Unlock()
	if !valid {
		return nil, s.invalidGrant()
	}

	body := s.issueTokens(g.email, g.scopes)
	if s.opts.Flavor == Microsoft {
		body["refresh_token"] = s.newRefreshToken(g.email, g.scopes)
	}
	return body, nil
}

func (s *Server) invalidGrant() *oauthError {
	if s.opts.Flavor == Microsoft {
		return &oauthError{http.StatusBadRequest, "invalid_grant",
			"AADSTS70008: The provided authorization code or refresh token has expired " +
				"due to inactivity. Send a new interactive authorization request for this user and resource.",
			70008}
	}
	return &oauthError{status: http.StatusBadRequest, code: "invalid_grant",
		description: "Token has been expired or revoked."}
}

func (s *Server) writeError(w http.ResponseWriter, e *oauthError) {
	body := map[string]any{"error": e.code, "error_description": e.description}
	if s.opts.Flavor == Microsoft && e.aadsts != 0 {
		body["error_codes"] = []int{e.aadsts}
		body["timestamp"] = time.Now().UTC().Format("2006-01-02 15:04:05Z")
		body["trace_id"] = randomUUID()
		body["correlation_id"] = randomUUID()
	}
	writeJSON(w, e.status, body)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}
