package fakeoauth

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestGoogleCodeFlow(t *testing.T) {
	s := Start(t, Options{Email: "alice@gmail.com"})
	tok := login(t, s)

	if tok.RefreshToken == "" {
		t.Error("no refresh token")
	}
	if tok.TokenType != "Bearer" {
		t.Errorf("token type = %q", tok.TokenType)
	}
	if tok.ExpiresIn != 3599 {
		t.Errorf("expires_in = %d, want 3599", tok.ExpiresIn)
	}
	if scope := tok.Extra("scope"); scope != "https://mail.google.com/ openid email" {
		t.Errorf("scope = %v", scope)
	}
	if !s.ValidAccessToken("alice@gmail.com", tok.AccessToken) {
		t.Error("access token not valid for alice")
	}
	if s.ValidAccessToken("bob@gmail.com", tok.AccessToken) {
		t.Error("access token valid for another user")
	}

	idToken, _ := tok.Extra("id_token").(string)
	claims := jwtClaims(t, idToken)
	if claims["iss"] != "https://accounts.google.com" {
		t.Errorf("iss = %v", claims["iss"])
	}
	if claims["aud"] != s.ClientID() {
		t.Errorf("aud = %v", claims["aud"])
	}
	if claims["email"] != "alice@gmail.com" || claims["email_verified"] != true {
		t.Errorf("email, email_verified = %v, %v", claims["email"], claims["email_verified"])
	}
	for _, key := range []string{"sub", "iat", "exp"} {
		if claims[key] == nil {
			t.Errorf("claim %s missing", key)
		}
	}

	form := s.LastForm()
	if form.Get("grant_type") != "authorization_code" || form.Get("client_secret") != s.ClientSecret() {
		t.Errorf("token form = %v", form)
	}
	if len(form.Get("code_verifier")) != 43 {
		t.Errorf("code_verifier = %q", form.Get("code_verifier"))
	}
}

func TestRedirectReachesLoopbackListener(t *testing.T) {
	s := Start(t, Options{})
	got := make(chan url.Values, 1)
	callback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.Query()
		io.WriteString(w, "done")
	}))
	defer callback.Close()

	cfg := s.Config(callback.URL + "/oauth2/callback")
	url := cfg.AuthCodeURL("xyz", oauth2.AccessTypeOffline, oauth2.ApprovalForce,
		oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("login_hint", "carol@gmail.com"))
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	q := <-got
	if q.Get("state") != "xyz" || q.Get("code") == "" {
		t.Errorf("callback query = %v", q)
	}
	if s.LoginHint() != "carol@gmail.com" {
		t.Errorf("login hint = %q", s.LoginHint())
	}
}

func TestRefreshAndRevoke(t *testing.T) {
	s := Start(t, Options{})
	cfg := s.Config(redirectURL)
	refresh := s.IssueRefreshToken("alice@gmail.com")

	tok, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: refresh}).Token()
	if err != nil {
		t.Fatalf("refreshing: %v", err)
	}
	if !s.ValidAccessToken("alice@gmail.com", tok.AccessToken) {
		t.Error("refreshed access token not valid")
	}
	if tok.RefreshToken != refresh {
		t.Errorf("refresh token changed to %q; Google keeps it", tok.RefreshToken)
	}
	if s.RefreshRequests() != 1 || s.TokenRequests() != 1 {
		t.Errorf("refresh, token requests = %d, %d; want 1, 1", s.RefreshRequests(), s.TokenRequests())
	}

	s.Revoke(refresh)
	_, err = cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: refresh}).Token()
	re := retrieveError(t, err)
	if re.Response.StatusCode != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", re.Response.StatusCode)
	}
	if re.ErrorCode != "invalid_grant" || re.ErrorDescription != "Token has been expired or revoked." {
		t.Errorf("error = %q %q", re.ErrorCode, re.ErrorDescription)
	}
}

func TestPKCEMismatchRejected(t *testing.T) {
	s := Start(t, Options{})
	cfg := s.Config(redirectURL)
	q := authorize(t, cfg, oauth2.GenerateVerifier())

	_, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier()))
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("error code = %q, want invalid_grant", re.ErrorCode)
	}
}

func TestCodeSingleUse(t *testing.T) {
	s := Start(t, Options{})
	cfg := s.Config(redirectURL)
	verifier := oauth2.GenerateVerifier()
	q := authorize(t, cfg, verifier)

	if _, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(verifier)); err != nil {
		t.Fatal(err)
	}
	_, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(verifier))
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("reused code: error code = %q, want invalid_grant", re.ErrorCode)
	}
}

func TestRedirectURIMustMatch(t *testing.T) {
	s := Start(t, Options{})
	cfg := s.Config(redirectURL)
	verifier := oauth2.GenerateVerifier()
	q := authorize(t, cfg, verifier)

	cfg.RedirectURL = "http://127.0.0.1:1/other"
	_, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(verifier))
	if re := retrieveError(t, err); re.ErrorCode != "redirect_uri_mismatch" {
		t.Errorf("error code = %q", re.ErrorCode)
	}
}

func TestWrongClientSecretRejected(t *testing.T) {
	s := Start(t, Options{})
	cfg := s.Config(redirectURL)
	cfg.ClientSecret = "wrong"

	_, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: s.IssueRefreshToken("a@gmail.com")}).Token()
	re := retrieveError(t, err)
	if re.ErrorCode != "invalid_client" || re.Response.StatusCode != http.StatusUnauthorized {
		t.Errorf("error = %d %q", re.Response.StatusCode, re.ErrorCode)
	}
}

func TestAuthorizationRequestChecks(t *testing.T) {
	s := Start(t, Options{})
	good := func() url.Values {
		return url.Values{
			"client_id": {s.ClientID()}, "response_type": {"code"}, "redirect_uri": {redirectURL},
			"code_challenge_method": {"S256"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
			"scope": {"https://mail.google.com/ openid email"}, "state": {"s"},
			"access_type": {"offline"}, "prompt": {"consent"},
		}
	}
	tests := []struct {
		name, key, value, wantText string
	}{
		{"unknown client", "client_id", "other", "client_id"},
		{"implicit grant", "response_type", "token", "response_type"},
		{"remote redirect", "redirect_uri", "http://example.com/cb", "loopback"},
		{"https redirect", "redirect_uri", "https://127.0.0.1:5/cb", "scheme"},
		{"plain challenge", "code_challenge_method", "plain", "S256"},
		{"no challenge", "code_challenge", "", "code_challenge"},
		{"no mail scope", "scope", "openid email", "https://mail.google.com/"},
		{"no state", "state", "", "state"},
		{"online access", "access_type", "online", "access_type"},
		{"no prompt", "prompt", "", "prompt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := good()
			q.Set(tt.key, tt.value)
			resp, err := noRedirect.Get(s.AuthURL() + "?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status = %d, want 400", resp.StatusCode)
			}
			if !strings.Contains(string(body), tt.wantText) {
				t.Errorf("body %q does not name %q", body, tt.wantText)
			}
		})
	}

	resp, err := noRedirect.Get(s.AuthURL() + "?" + good().Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("valid request: status = %d, want 302", resp.StatusCode)
	}
}

func TestConsentKnobs(t *testing.T) {
	t.Run("deny", func(t *testing.T) {
		s := Start(t, Options{})
		s.SetConsent(Consent{Deny: true})
		q := authorize(t, s.Config(redirectURL), oauth2.GenerateVerifier())
		if q.Get("error") != "access_denied" || q.Get("state") != "state-123" || q.Get("code") != "" {
			t.Errorf("redirect query = %v", q)
		}
	})
	t.Run("tamper state", func(t *testing.T) {
		s := Start(t, Options{})
		s.SetConsent(Consent{TamperState: true})
		q := authorize(t, s.Config(redirectURL), oauth2.GenerateVerifier())
		if q.Get("state") == "state-123" {
			t.Error("state not tampered")
		}
	})
	t.Run("untick mail", func(t *testing.T) {
		s := Start(t, Options{Email: "a@gmail.com"})
		s.SetConsent(Consent{UntickMail: true})
		tok := login(t, s)
		if scope := tok.Extra("scope"); scope != "openid email" {
			t.Errorf("scope = %v, want openid email", scope)
		}
		if s.ValidAccessToken("a@gmail.com", tok.AccessToken) {
			t.Error("token without the mail scope is valid for SMTP")
		}
	})
}

func TestUserinfoAndExpiry(t *testing.T) {
	s := Start(t, Options{Email: "dave@gmail.com"})
	tok := login(t, s)

	req, _ := http.NewRequest(http.MethodGet, s.UserinfoURL(), nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if info["email"] != "dave@gmail.com" || info["email_verified"] != true || info["sub"] == nil {
		t.Errorf("userinfo = %v", info)
	}

	s.ExpireAccessTokens()
	if s.ValidAccessToken("dave@gmail.com", tok.AccessToken) {
		t.Error("access token valid after ExpireAccessTokens")
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("userinfo after expiry: status = %d, want 401", resp.StatusCode)
	}
}

func TestTokenFaults(t *testing.T) {
	tests := []struct {
		name  string
		fault TokenFault
		check func(t *testing.T, err error)
	}{
		{"server error", ServerError, func(t *testing.T, err error) {
			if re := retrieveError(t, err); re.Response.StatusCode != http.StatusInternalServerError {
				t.Errorf("status = %d, want 500", re.Response.StatusCode)
			}
		}},
		{"broken JSON", BrokenJSON, func(t *testing.T, err error) {
			if err == nil {
				t.Error("broken JSON accepted")
			}
		}},
		{"invalid grant", InvalidGrant, func(t *testing.T, err error) {
			if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
				t.Errorf("error code = %q", re.ErrorCode)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Start(t, Options{})
			refresh := s.IssueRefreshToken("a@gmail.com")
			s.SetTokenFault(tt.fault)
			_, err := s.Config(redirectURL).TokenSource(context.Background(), &oauth2.Token{RefreshToken: refresh}).Token()
			tt.check(t, err)

			s.SetTokenFault(NoFault)
			if _, err := s.Config(redirectURL).TokenSource(context.Background(), &oauth2.Token{RefreshToken: refresh}).Token(); err != nil {
				t.Errorf("after NoFault: %v", err)
			}
		})
	}
}

func TestTokenDelayHitsTimeout(t *testing.T) {
	s := Start(t, Options{})
	s.SetTokenDelay(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()

	start := time.Now()
	_, err := s.Config(redirectURL).TokenSource(ctx, &oauth2.Token{RefreshToken: s.IssueRefreshToken("a@gmail.com")}).Token()
	if err == nil {
		t.Fatal("delayed token request succeeded")
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("request took %v, want about the 200ms timeout", elapsed)
	}
}

func TestGoogleDeviceFlowRejectsMailScope(t *testing.T) {
	s := Start(t, Options{})
	_, err := s.Config("").DeviceAuth(context.Background())
	if re := retrieveError(t, err); re.ErrorCode != "invalid_scope" {
		t.Errorf("error code = %q, want invalid_scope", re.ErrorCode)
	}
}
