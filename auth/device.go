package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/oauth2"

	"github.com/bridgemail/bridge/config"
)

// Errors of DeviceConsent besides those of Consent.
var (
	ErrDeviceUnsupported = errors.New("the provider does not allow the device flow for sending mail")
	ErrDeviceCodeExpired = errors.New("the user code expired before it was entered")
)

// DeviceOptions configures DeviceConsent. The zero value waits for
// DefaultConsentTimeout or until the user code expires.
type DeviceOptions struct {
	// Account, if set, must be the account that consents.
	Account string
	// Timeout bounds the wait. Zero means DefaultConsentTimeout.
	Timeout time.Duration
	// Out receives the verification URL and the user code. Nil discards
	// them.
	Out io.Writer
	// HTTPClient makes the requests. Nil means a client with a 30-second
	// timeout.
	HTTPClient *http.Client
}

// DeviceConsent runs the device authorization grant (RFC 8628): it prints
// the verification URL and the user code to opts.Out, then polls the
// token endpoint at the interval the server gives until the user has
// entered the code on any device. x/oauth2 waits through
// authorization_pending and slows down on slow_down.
//
// Microsoft allows this flow for SMTP.Send. Google allows it only for a
// few scopes, none of them Gmail's, so for a Google provider it returns
// ErrDeviceUnsupported without a request.
func (p *Provider) DeviceConsent(ctx context.Context, opts DeviceOptions) (*Grant, error) {
	if p.Kind == config.KindGoogle {
		return nil, fmt.Errorf("%w: Google does not allow the scope %s in the device flow; "+
			"run bridge authorize without --device and open the printed URL on any machine",
			ErrDeviceUnsupported, config.GoogleMailScope)
	}
	if p.OAuth.Endpoint.DeviceAuthURL == "" {
		return nil, fmt.Errorf("%w: provider %s has no device_auth_url", ErrDeviceUnsupported, p.Name)
	}

	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultConsentTimeout
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	out := opts.Out
	if out == nil {
		out = io.Discard
	}

	da, err := p.OAuth.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("requesting a device code: %w", err)
	}
	fmt.Fprintf(out, "On any device, open\n\n%s\n\nand enter the code\n\n    %s\n\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(out, "or open this address, which carries the code:\n\n%s\n\n", da.VerificationURIComplete)
	}
	if opts.Account != "" {
		fmt.Fprintf(out, "Sign in as %s.\n", opts.Account)
	}
	fmt.Fprintf(out, "Waiting up to %s...\n", timeout)

	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tok, err := p.OAuth.DeviceAccessToken(waitCtx, da)
	if err != nil {
		return nil, deviceError(ctx, err, timeout, da)
	}
	return p.checkGrant(ctx, client, tok, p.OAuth.Scopes, opts.Account)
}

func deviceError(ctx context.Context, err error, timeout time.Duration, da *oauth2.DeviceAuthResponse) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		switch re.ErrorCode {
		case "access_denied":
			return fmt.Errorf("%w (access_denied); run the command again and allow access", ErrAccessDenied)
		case "expired_token":
			return fmt.Errorf("%w; run the command again and enter the new code sooner", ErrDeviceCodeExpired)
		}
		return fmt.Errorf("polling the token endpoint: %w", err)
	}
	if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		if !da.Expiry.IsZero() && time.Now().After(da.Expiry) {
			return fmt.Errorf("%w; run the command again and enter the new code sooner", ErrDeviceCodeExpired)
		}
		return fmt.Errorf("%w: waited %s", ErrConsentTimeout, timeout)
	}
	return fmt.Errorf("polling the token endpoint: %w", err)
}
