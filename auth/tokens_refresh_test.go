package auth_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/internal/bridgetest"
)

func newTokens(t *testing.T) (*bridgetest.Env, *auth.Tokens, map[string]*auth.Provider) {
	t.Helper()
	env := bridgetest.New(t, bridgetest.Options{})
	st := env.OpenStore(t)
	env.Seed(t, st, "printer", "password", "scanner@example.com")
	providers, err := auth.NewProviders(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return env, auth.NewTokens(st, providers, slog.New(slog.DiscardHandler)), providers
}

func TestRefreshIgnoresCachedToken(t *testing.T) {
	env, tokens, _ := newTokens(t)
	ctx := context.Background()
	if _, err := tokens.AccessToken(ctx, env.Provider, "scanner@example.com"); err != nil {
		t.Fatal(err)
	}
	before := env.OAuth.RefreshRequests()

	expiry, err := tokens.Refresh(ctx, env.Provider, "scanner@example.com")
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := env.OAuth.RefreshRequests(); got != before+1 {
		t.Errorf("refresh requests = %d, want %d", got, before+1)
	}
	if !expiry.After(time.Now()) {
		t.Errorf("expiry %v is not in the future", expiry)
	}
}

func TestRefreshRevokedGivesConsentError(t *testing.T) {
	env, tokens, _ := newTokens(t)
	env.OAuth.RevokeAll()
	_, err := tokens.Refresh(context.Background(), env.Provider, "scanner@example.com")
	var ce *auth.ConsentError
	if !errors.As(err, &ce) {
		t.Fatalf("Refresh = %v, want a ConsentError", err)
	}
}

func TestReconfigureReplacesProviders(t *testing.T) {
	env, tokens, providers := newTokens(t)
	tokens.Reconfigure(map[string]*auth.Provider{}, time.Second)
	_, err := tokens.Refresh(context.Background(), env.Provider, "scanner@example.com")
	var te *auth.TokenError
	if !errors.As(err, &te) {
		t.Fatalf("Refresh with no providers = %v, want a TokenError", err)
	}

	tokens.Reconfigure(providers, time.Second)
	if _, err := tokens.Refresh(context.Background(), env.Provider, "scanner@example.com"); err != nil {
		t.Errorf("Refresh after restoring the providers: %v", err)
	}
}
