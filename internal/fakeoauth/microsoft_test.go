package fakeoauth

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestMicrosoftRotatesRefreshToken(t *testing.T) {
	s := Start(t, Options{Flavor: Microsoft, Email: "a@contoso.com"})
	cfg := s.Config(redirectURL)
	first := login(t, s)
	if first.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	if n := len(first.AccessToken); n <= 1500 {
		t.Errorf("access token has %d characters, want more than 1500", n)
	}
	if !s.ValidAccessToken("a@contoso.com", first.AccessToken) {
		t.Error("access token not valid")
	}

	second, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: first.RefreshToken}).Token()
	if err != nil {
		t.Fatalf("refreshing: %v", err)
	}
	if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
		t.Errorf("refresh token not rotated: %q", second.RefreshToken)
	}

	_, err = cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: first.RefreshToken}).Token()
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("old refresh token: error code = %q, want invalid_grant", re.ErrorCode)
	}
	if _, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: second.RefreshToken}).Token(); err != nil {
		t.Errorf("new refresh token: %v", err)
	}
}

func TestMicrosoftPublicClientRejectsSecret(t *testing.T) {
	s := Start(t, Options{Flavor: Microsoft})
	if s.ClientSecret() != "" {
		t.Fatalf("client secret = %q, want a public client", s.ClientSecret())
	}
	cfg := s.Config(redirectURL)
	cfg.ClientSecret = "not-for-public-clients"

	_, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: s.IssueRefreshToken("a@contoso.com")}).Token()
	re := retrieveError(t, err)
	if re.ErrorCode != "invalid_client" {
		t.Errorf("error code = %q, want invalid_client", re.ErrorCode)
	}
	if len(re.ErrorDescription) < 14 || re.ErrorDescription[:14] != "AADSTS7000215:" {
		t.Errorf("description = %q", re.ErrorDescription)
	}
}

func TestMicrosoftDeviceFlowPendingThenSuccess(t *testing.T) {
	s := Start(t, Options{Flavor: Microsoft, Email: "a@contoso.com"})
	cfg := s.Config("")
	da, err := cfg.DeviceAuth(context.Background())
	if err != nil {
		t.Fatalf("device authorization: %v", err)
	}
	if da.UserCode == "" || da.VerificationURI == "" || da.Interval != DefaultDeviceInterval {
		t.Errorf("device authorization = %+v", da)
	}

	// Approve once the first poll has got authorization_pending.
	go func() {
		for s.TokenRequests() < 1 {
			time.Sleep(10 * time.Millisecond)
		}
		s.ApproveDevice(da.UserCode)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("polling: %v", err)
	}
	if !s.ValidAccessToken("a@contoso.com", tok.AccessToken) || tok.RefreshToken == "" {
		t.Errorf("token = %+v", tok)
	}
	if n := s.TokenRequests(); n < 2 {
		t.Errorf("%d polls, want a pending one first", n)
	}
	if s.LastForm().Get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code" {
		t.Errorf("grant_type = %q", s.LastForm().Get("grant_type"))
	}
}

func TestMicrosoftDevicePollErrors(t *testing.T) {
	tests := []struct {
		name   string
		opts   Options
		change func(s *Server, userCode string)
		want   []string
	}{
		{"pending", Options{}, nil, []string{"authorization_pending", "authorization_pending"}},
		{"slow down", Options{DeviceSlowDownPolls: 1, DeviceApproveAfterPolls: 2}, nil, []string{"slow_down", ""}},
		{"approve after polls", Options{DeviceApproveAfterPolls: 2}, nil, []string{"authorization_pending", ""}},
		{"expired", Options{}, func(s *Server, c string) { s.ExpireDevice(c) }, []string{"expired_token"}},
		{"denied", Options{}, func(s *Server, c string) { s.DenyDevice(c) }, []string{"access_denied"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Flavor = Microsoft
			s := Start(t, tt.opts)
			status, da := postForm(t, s.DeviceAuthURL(), url.Values{
				"client_id": {s.ClientID()}, "scope": {"https://outlook.office.com/SMTP.Send offline_access"},
			})
			if status != http.StatusOK {
				t.Fatalf("device authorization status = %d: %v", status, da)
			}
			if tt.change != nil {
				tt.change(s, da["user_code"].(string))
			}
			for i, want := range tt.want {
				status, body := postForm(t, s.TokenURL(), url.Values{
					"client_id":   {s.ClientID()},
					"grant_type":  {"urn:ietf:params:oauth:grant-type:device_code"},
					"device_code": {da["device_code"].(string)},
				})
				if want == "" {
					if status != http.StatusOK || body["access_token"] == nil {
						t.Errorf("poll %d: status %d, body %v; want tokens", i+1, status, body)
					}
					continue
				}
				if status != http.StatusBadRequest || body["error"] != want {
					t.Errorf("poll %d: status %d, error %v; want 400 %s", i+1, status, body["error"], want)
				}
			}
		})
	}
}
