package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/internal/fakeoauth"
)

// syncWriter collects output written from another goroutine.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func deviceConsent(t *testing.T, fake *fakeoauth.Server, opts DeviceOptions) (*Grant, error) {
	t.Helper()
	p := testProvider(t, fake)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.DeviceConsent(ctx, opts)
}

func TestDeviceConsentPendingThenApproved(t *testing.T) {
	t.Parallel()
	fake := fakeoauth.Start(t, fakeoauth.Options{Flavor: fakeoauth.Microsoft, Email: "scanner@contoso.example"})
	out := &syncWriter{}
	go func() {
		// Approve once the code is printed, after at least one
		// authorization_pending poll.
		for !strings.Contains(out.String(), "Waiting") {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(1500 * time.Millisecond)
		fake.ApproveDevice(fake.LastUserCode())
	}()

	g, err := deviceConsent(t, fake, DeviceOptions{Out: out, Account: "scanner@contoso.example"})
	if err != nil {
		t.Fatalf("DeviceConsent: %v", err)
	}
	if g.Account != "scanner@contoso.example" || g.RefreshToken == "" {
		t.Errorf("grant = %+v", g)
	}
	if !strings.Contains(out.String(), fake.LastUserCode()) || !strings.Contains(out.String(), "/devicelogin") {
		t.Errorf("output lacks the user code or the URL:\n%s", out)
	}
	polls := 0
	for _, r := range fake.Requests() {
		if r.Form.Get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code" {
			polls++
			if r.Form.Has("client_secret") {
				t.Error("a public client sent a client_secret")
			}
		}
	}
	if polls < 2 {
		t.Errorf("token endpoint polled %d times, want a pending poll before success", polls)
	}
}

func TestDeviceConsentRejected(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(*fakeoauth.Server, string) bool
		want error
	}{
		{"denied", (*fakeoauth.Server).DenyDevice, ErrAccessDenied},
		{"expired", (*fakeoauth.Server).ExpireDevice, ErrDeviceCodeExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake := fakeoauth.Start(t, fakeoauth.Options{Flavor: fakeoauth.Microsoft})
			out := &syncWriter{}
			go func() {
				for !strings.Contains(out.String(), "Waiting") {
					time.Sleep(10 * time.Millisecond)
				}
				tc.act(fake, fake.LastUserCode())
			}()
			_, err := deviceConsent(t, fake, DeviceOptions{Out: out})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDeviceConsentAccountMismatch(t *testing.T) {
	t.Parallel()
	fake := fakeoauth.Start(t, fakeoauth.Options{Flavor: fakeoauth.Microsoft, Email: "other@contoso.example",
		DeviceApproveAfterPolls: 1})
	_, err := deviceConsent(t, fake, DeviceOptions{Account: "scanner@contoso.example"})
	if !errors.Is(err, ErrAccountMismatch) {
		t.Fatalf("err = %v, want ErrAccountMismatch", err)
	}
}

func TestDeviceConsentTimeout(t *testing.T) {
	t.Parallel()
	fake := fakeoauth.Start(t, fakeoauth.Options{Flavor: fakeoauth.Microsoft})
	_, err := deviceConsent(t, fake, DeviceOptions{Timeout: 1500 * time.Millisecond})
	if !errors.Is(err, ErrConsentTimeout) {
		t.Fatalf("err = %v, want ErrConsentTimeout", err)
	}
}

func TestDeviceConsentSlowDown(t *testing.T) {
	t.Parallel()
	fake := fakeoauth.Start(t, fakeoauth.Options{Flavor: fakeoauth.Microsoft,
		DeviceSlowDownPolls: 1, DeviceApproveAfterPolls: 2})
	if _, err := deviceConsent(t, fake, DeviceOptions{}); err != nil {
		t.Fatalf("DeviceConsent after slow_down: %v", err)
	}
}

func TestDeviceConsentRefusedForGoogle(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	_, err := deviceConsent(t, fake, DeviceOptions{})
	if !errors.Is(err, ErrDeviceUnsupported) {
		t.Fatalf("err = %v, want ErrDeviceUnsupported", err)
	}
	if !strings.Contains(err.Error(), "Google does not allow") {
		t.Errorf("message does not say why: %v", err)
	}
	if n := len(fake.Requests()); n != 0 {
		t.Errorf("%d requests sent to Google", n)
	}
}

func TestIDTokenPreferredUsernameForMicrosoft(t *testing.T) {
	claims := `{"aud":"client-1","preferred_username":"Scanner@Contoso.example"}`
	raw := "e30." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".sig"
	for _, tc := range []struct {
		kind string
		want string
	}{
		{config.KindMicrosoft, "Scanner@Contoso.example"},
		{config.KindGoogle, ""},
	} {
		p := &Provider{Kind: tc.kind, OAuth: &oauth2.Config{ClientID: "client-1"}}
		got, err := p.idTokenEmail(raw)
		if err != nil {
			t.Fatalf("%s: %v", tc.kind, err)
		}
		if got != tc.want {
			t.Errorf("%s: address = %q, want %q", tc.kind, got, tc.want)
		}
	}
}
