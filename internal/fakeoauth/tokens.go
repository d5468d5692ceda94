package fakeoauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// microsoftTokenFiller pads Microsoft access tokens past 1500 characters,
// the size of real Microsoft JWTs, so that clients meet the two-step
// XOAUTH2 form that go-smtp uses for long initial responses.
const microsoftTokenFiller = 1200

// issueTokens mints an access token, and an ID token if openid was
// granted, and returns the token response without a refresh token.
func (s *Server) issueTokens(email string, scopes []string) map[string]any {
	lifetime := s.opts.AccessTokenLifetime
	body := map[string]any{
		"access_token": s.newAccessToken(email, scopes, lifetime),
		"expires_in":   int(lifetime.Seconds()),
		"scope":        joinScopes(scopes),
		"token_type":   "Bearer",
	}
	if s.opts.Flavor == Microsoft {
		body["ext_expires_in"] = int(lifetime.Seconds())
	}
	if hasScope(scopes, "openid") {
		body["id_token"] = s.idToken(email)
	}
	return body
}

func (s *Server) newAccessToken(email string, scopes []string, lifetime time.Duration) string {
	var token string
	if s.opts.Flavor == Microsoft {
		token = jwt(map[string]any{
			"aud":   "https://outlook.office.com",
			"iss":   "https://sts.windows.net/common/",
			"upn":   email,
			"scp":   "SMTP.Send",
			"exp":   time.Now().Add(lifetime).Unix(),
			"nonce": randomString(32),
			"xms":   randomString(microsoftTokenFiller),
		})
	} else {
		token = "ya29.a0" + randomString(160)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.access[token] = &accessGrant{
		email:  email,
		scopes: append([]string(nil), scopes...),
		expiry: time.Now().Add(lifetime),
	}
	return token
}

func (s *Server) newRefreshToken(email string, scopes []string) string {
	token := "1//0g" + randomString(96)
	if s.opts.Flavor == Microsoft {
		token = "0.AX" + randomString(400)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh[token] = &grant{email: email, scopes: append([]string(nil), scopes...)}
	return token
}

// IssueRefreshToken returns a new refresh token for email with the
// flavour's full scopes, as if the user had consented earlier.
func (s *Server) IssueRefreshToken(email string) string {
	return s.newRefreshToken(email, s.Scopes())
}

// IssueAccessToken returns a new access token for email with the flavour's
// full scopes and the configured lifetime.
func (s *Server) IssueAccessToken(email string) string {
	return s.newAccessToken(email, s.Scopes(), s.opts.AccessTokenLifetime)
}

// Revoke makes refreshToken unusable, as a user removing the app's access
// does. Access tokens already issued stay valid.
func (s *Server) Revoke(refreshToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok := s.refresh[refreshToken]; ok {
		g.revoked = true
	}
}

// RevokeAll revokes every refresh token issued so far.
func (s *Server) RevokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.refresh {
		g.revoked = true
	}
}

// ValidAccessToken reports whether token was issued by this server for
// user, has not expired and grants the mail scope. Its signature fits
// fakegmail.Options.CheckToken.
func (s *Server) ValidAccessToken(user, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.access[token]
	return ok && !a.expired && time.Now().Before(a.expiry) &&
		strings.EqualFold(a.email, user) && hasScope(a.scopes, s.mailScope())
}

// AccessTokens returns every access token issued so far, so that a test
// can look for them where they must not appear.
func (s *Server) AccessTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tokens := make([]string, 0, len(s.access))
	for t := range s.access {
		tokens = append(tokens, t)
	}
	return tokens
}

// RefreshTokens returns every refresh token issued so far, revoked or not.
func (s *Server) RefreshTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tokens := make([]string, 0, len(s.refresh))
	for t := range s.refresh {
		tokens = append(tokens, t)
	}
	return tokens
}

// RefreshTokenValid reports whether token was issued here and is neither
// revoked nor replaced by a rotation.
func (s *Server) RefreshTokenValid(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.refresh[token]
	return ok && !g.revoked
}

// ExpireAccessTokens makes every access token issued so far invalid, as if
// it had expired early. Clients still hold the old expiry.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.access {
		a.expired = true
	}
}

// handleUserinfo serves the OpenID Connect userinfo endpoint.
func (s *Server) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	a, known := s.access[token]
	valid := ok && known && !a.expired && time.Now().Before(a.expiry)
	s.mu.Unlock()
	if !valid {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]any{
			"error":             "invalid_request",
			"error_description": "Invalid Credentials",
		})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"email":          a.email,
		"email_verified": true,
		"sub":            subject(a.email),
	})
}

// idToken returns an OpenID Connect ID token for email. Its signature is a
// placeholder, so clients can only decode it.
func (s *Server) idToken(email string) string {
	now := time.Now()
	iss := "https://accounts.google.com"
	if s.opts.Flavor == Microsoft {
		iss = "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
	}
	return jwt(map[string]any{
		"iss":            iss,
		"azp":            s.opts.ClientID,
		"aud":            s.opts.ClientID,
		"sub":            subject(email),
		"email":          email,
		"email_verified": true,
		"iat":            now.Unix(),
		"exp":            now.Add(time.Hour).Unix(),
	})
}

// jwt encodes claims as a JWS compact serialization with a dummy
// signature.
func jwt(claims map[string]any) string {
	header := `{"alg":"RS256","kid":"fakeoauth","typ":"JWT"}`
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(fmt.Sprintf("fakeoauth: encoding JWT claims: %v", err))
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString(payload) + "." +
		enc.EncodeToString([]byte("fakeoauth-signature-"+randomString(16)))
}

// subject returns a stable numeric account id for email, in the style of
// Google's sub claim.
func subject(email string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(email)))
	return fmt.Sprintf("1%020d", binary.BigEndian.Uint64(sum[:8])%1e19)
}

const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// randomString returns n random characters from the base64url alphabet.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = tokenAlphabet[int(b[i])%len(tokenAlphabet)]
	}
	return string(b)
}

func randomUUID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
