package fakeoauth

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

const (
	deviceCodeGrant = "urn:ietf:params:oauth:grant-type:device_code"
	// deviceCodeLifetime is the expires_in of a device code; Microsoft
	// uses 15 minutes.
	deviceCodeLifetime = 15 * time.Minute
)

// device is a pending device authorization (RFC 8628).
type device struct {
	userCode string
	scopes   []string
	expiry   time.Time
	polls    int
	approved bool
	denied   bool
	expired  bool
	redeemed bool
}

// handleDeviceAuth serves the device authorization endpoint.
func (s *Server) handleDeviceAuth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "device authorization endpoint: method must be POST", http.StatusMethodNotAllowed)
		return
	}
	if got := r.PostForm.Get("client_id"); got != s.opts.ClientID {
		s.writeError(w, &oauthError{http.StatusBadRequest, "invalid_client",
			fmt.Sprintf("unknown client_id %q", got), 700016})
		return
	}
	scopes := strings.Fields(r.PostForm.Get("scope"))
	if s.opts.Flavor == Google && slices.Contains(scopes, GoogleMailScope) {
		// Google's device flow allows only a few scopes, and no Gmail scope.
		s.writeError(w, &oauthError{status: http.StatusBadRequest, code: "invalid_scope",
			description: "Invalid device flow scope: " + GoogleMailScope})
		return
	}
	if !slices.Contains(scopes, s.mailScope()) {
		s.writeError(w, &oauthError{http.StatusBadRequest, "invalid_scope",
			fmt.Sprintf("scope %q lacks %q", r.PostForm.Get("scope"), s.mailScope()), 70011})
		return
	}

	deviceCode := "DAQABAAEAAA" + randomString(64)
	userCode := strings.ToUpper(randomString(9))
	userCode = strings.NewReplacer("-", "X", "_", "Y").Replace(userCode)
	verification := s.http.URL + "/devicelogin"
	s.mu.Lock()
	s.devices[deviceCode] = &device{
		userCode: userCode,
		scopes:   scopes,
		expiry:   time.Now().Add(deviceCodeLifetime),
	}
	s.lastUserCode = userCode
	s.mu.Unlock()

	writeJSON(w, http.StatusOK, map[string]any{
		"device_code":      deviceCode,
		"user_code":        userCode,
		"verification_uri": verification,
		"expires_in":       int(deviceCodeLifetime.Seconds()),
		"interval":         s.opts.DeviceInterval,
		"message": fmt.Sprintf("To sign in, use a web browser to open the page %s "+
			"and enter the code %s to authenticate.", verification, userCode),
	})
}

// redeemDeviceCode handles one poll of the token endpoint with a device
// code (RFC 8628 section 3.5).
func (s *Server) redeemDeviceCode(form url.Values) (map[string]any, *oauthError) {
	s.mu.Lock()
	d, ok := s.devices[form.Get("device_code")]
	if !ok || d.redeemed {
		s.mu.Unlock()
		return nil, &oauthError{http.StatusBadRequest, "invalid_grant",
			"AADSTS70000: The provided device code is not valid.", 70000}
	}
	d.polls++
	if s.opts.DeviceApproveAfterPolls > 0 && d.polls >= s.opts.DeviceApproveAfterPolls {
		d.approved = true
	}
	var e *oauthError
	switch {
	case d.expired || time.Now().After(d.expiry):
		e = &oauthError{http.StatusBadRequest, "expired_token",
			"AADSTS70019: Verification code expired.", 70019}
	case d.denied:
		e = &oauthError{http.StatusBadRequest, "access_denied",
			"AADSTS70020: The user declined the authorization request.", 70020}
	case d.polls <= s.opts.DeviceSlowDownPolls:
		e = &oauthError{http.StatusBadRequest, "slow_down",
			"Polling too fast. Increase the interval by 5 seconds.", 0}
	case !d.approved:
		e = &oauthError{http.StatusBadRequest, "authorization_pending",
			"AADSTS70016: OAuth 2.0 device flow error. Authorization is pending.", 70016}
	default:
		d.redeemed = true
	}
	email := s.email("")
	scopes := d.scopes
	s.mu.Unlock()
	if e != nil {
		return nil, e
	}

	body := s.issueTokens(email, scopes)
	if slices.Contains(scopes, "offline_access") {
		body["refresh_token"] = s.newRefreshToken(email, scopes)
	}
	return body, nil
}

// updateDevice applies change to the device with userCode and reports
// whether such a device exists.
func (s *Server) updateDevice(userCode string, change func(*device)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devices {
		if d.userCode == userCode {
			change(d)
			return true
		}
	}
	return false
}

// ApproveDevice approves the device authorization with userCode for the
// account Options.Email (or DefaultEmail), so the next poll gets tokens.
// It returns false if the code is unknown.
func (s *Server) ApproveDevice(userCode string) bool {
	return s.updateDevice(userCode, func(d *device) { d.approved = true })
}

// DenyDevice makes later polls for userCode get access_denied.
func (s *Server) DenyDevice(userCode string) bool {
	return s.updateDevice(userCode, func(d *device) { d.denied = true })
}

// ExpireDevice makes later polls for userCode get expired_token.
func (s *Server) ExpireDevice(userCode string) bool {
	return s.updateDevice(userCode, func(d *device) { d.expired = true })
}

// LastUserCode returns the user code of the last device authorization.
func (s *Server) LastUserCode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastUserCode
}
