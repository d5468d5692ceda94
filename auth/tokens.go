package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/bridgemail/bridge/store"
)

// ConsentError means the provider rejected the refresh token with
// invalid_grant: the user revoked access, or the consent expired. Only a
// new consent with bridge authorize fixes it.
type ConsentError struct {
	Account     string
	Description string
}

func (e *ConsentError) Error() string {
	msg := "consent for " + e.Account + " was revoked or has expired"
	if e.Description != "" {
		msg += " (" + e.Description + ")"
	}
	return msg
}

// TokenError is a failed refresh other than a revoked consent.
type TokenError struct {
	Account string
	// Temporary is true for failures that may pass: the token endpoint
	// is unreachable, timed out, or returned 5xx or broken JSON.
	Temporary bool
	// Code is the OAuth error code, such as invalid_client, if the
	// endpoint returned one.
	Code string
	Err  error
}

func (e *TokenError) Error() string {
	return "refreshing access token for " + e.Account + ": " + e.Err.Error()
}

func (e *TokenError) Unwrap() error { return e.Err }

// TokenStore loads and saves refresh tokens; *store.Store implements it.
type TokenStore interface {
	Account(address string) (store.Account, error)
	SetRefreshToken(address, token string) error
}

// Tokens caches access tokens per account and refreshes them, one refresh
// at a time per account however many sessions wait for it. It is safe for
// concurrent use.
type Tokens struct {
	store     TokenStore
	providers map[string]*Provider
	log       *slog.Logger
	// Margin is how long before its expiry an access token counts as
	// expired.
	Margin time.Duration
	// InUse is how long after its last AccessToken an account counts as
	// in use, for the background refresh that Start runs. Set it before
	// Start.
	InUse time.Duration
	// Timeout bounds one request to the token endpoint. Set it before
	// first use; Reconfigure changes it later.
	Timeout time.Duration
	// HTTPClient makes the token requests; nil means a client with
	// Timeout.
	HTTPClient *http.Client

	mu       sync.Mutex
	accounts map[string]*accountTokens
	// refreshAhead is the margin of the background refresh; zero turns
	// it off.
	refreshAhead time.Duration
	// background runs the refresher and the refreshes it starts; it is
	// nil until Start.
	background *refresher
}

// accountTokens is the cache entry of one account. The refresh channel
// has room for one holder, so a refresh honors the waiter's context.
type accountTokens struct {
	refresh chan struct{}

	mu           sync.Mutex
	token        *oauth2.Token
	refreshToken string
	lastRefresh  time.Time
	lastAttempt  time.Time
	lastError    error
	// lastUsed and provider are the time and provider of the last
	// AccessToken, which the background refresh needs.
	lastUsed time.Time
	provider string
}

// NewTokens returns a token cache over st for the given providers.
func NewTokens(st TokenStore, providers map[string]*Provider, log *slog.Logger) *Tokens {
	return &Tokens{
		store:     st,
		providers: providers,
		log:       log,
		Margin:    time.Minute,
		InUse:     DefaultInUse,
		Timeout:   30 * time.Second,
		accounts:  make(map[string]*accountTokens),
	}
}

func (t *Tokens) entry(account string) *accountTokens {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.accounts[account]
	if !ok {
		e = &accountTokens{refresh: make(chan struct{}, 1)}
		t.accounts[account] = e
	}
	return e
}

// AccessToken returns a valid access token for the account at the named
// provider, refreshing it when it is missing or expires within Margin.
// A token that is valid but due for the background refresh is returned
// at once, and the refresh starts behind it. The error is a
// *ConsentError, a *TokenError or the context's error.
func (t *Tokens) AccessToken(ctx context.Context, provider, account string) (string, error) {
	e := t.entry(account)
	e.use(provider, time.Now())
	if tok := e.valid(t.Margin); tok != "" {
		if t.due(e, time.Now()) {
			t.refreshInBackground(e, provider, account)
		}
		return tok, nil
	}

	select {
	case e.refresh <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-e.refresh }()

	// Another session may have refreshed while this one waited.
	if tok := e.valid(t.Margin); tok != "" {
		return tok, nil
	}
	// A refresh serves every session that waits for it, so it must not
	// end when the session that started it goes away.
	return t.refreshLocked(context.WithoutCancel(ctx), e, provider, account)
}

// Invalidate drops the cached access token if it is still token, after
// the submission server rejected it, so the next AccessToken refreshes.
func (t *Tokens) Invalidate(account, token string) {
	e := t.entry(account)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.token != nil && e.token.AccessToken == token {
		e.token = nil
	}
}

// Forget drops everything cached for the account, such as after its
// consent was replaced or removed.
func (t *Tokens) Forget(account string) {
	t.mu.Lock()
	delete(t.accounts, account)
	t.mu.Unlock()
}

// use records that a session asked for a token of the account.
func (e *accountTokens) use(provider string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastUsed = now
	e.provider = provider
}

func (e *accountTokens) valid(margin time.Duration) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.token == nil || e.token.AccessToken == "" {
		return ""
	}
	if !e.token.Expiry.IsZero() && time.Until(e.token.Expiry) <= margin {
		return ""
	}
	return e.token.AccessToken
}

func (t *Tokens) refreshLocked(ctx context.Context, e *accountTokens, providerName, account string) (string, error) {
	providers, timeout := t.settings()
	p, ok := providers[providerName]
	if !ok {
		return "", &TokenError{Account: account, Err: fmt.Errorf("provider %q is not configured", providerName)}
	}

	e.mu.Lock()
	refreshToken := e.refreshToken
	e.mu.Unlock()
	if refreshToken == "" {
		acct, err := t.store.Account(account)
		if errors.Is(err, store.ErrNotFound) {
			return "", &ConsentError{Account: account, Description: "no refresh token is stored"}
		}
		if err != nil {
			return "", &TokenError{Account: account, Err: err}
		}
		refreshToken = acct.RefreshToken
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := t.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: timeout}
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)

	start := time.Now()
	e.mu.Lock()
	e.lastAttempt = start
	e.mu.Unlock()
	tok, err := p.OAuth.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		err = classifyRefresh(account, err)
		e.mu.Lock()
		e.lastError = err
		e.mu.Unlock()
		return "", err
	}

	if tok.RefreshToken != "" && tok.RefreshToken != refreshToken {
		// The provider rotated the refresh token and the old one no
		// longer works: save the new one before anything else.
		// NOTE: a crash between the provider's reply and this commit
		// loses the new token, and the store keeps the old one. Where the
		// provider has revoked the old one, bridge authorize must run
		// again.
		if err := t.store.SetRefreshToken(account, tok.RefreshToken); err != nil {
			t.log.Error("saving rotated refresh token; the new token is kept in memory only, so a restart will need bridge authorize",
				"account", account, "err", err)
		}
	} else {
		tok.RefreshToken = refreshToken
	}

	e.mu.Lock()
	e.token = tok
	e.refreshToken = tok.RefreshToken
	e.lastRefresh = time.Now()
	e.lastError = nil
	e.mu.Unlock()
	t.log.Debug("refreshed access token", "account", account,
		"expires_in", time.Until(tok.Expiry).Round(time.Second), "took", time.Since(start).Round(time.Millisecond))
	return tok.AccessToken, nil
}

func classifyRefresh(account string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode == "invalid_grant" {
			return &ConsentError{Account: account, Description: re.ErrorDescription}
		}
		temporary := re.Response != nil && re.Response.StatusCode >= 500
		if re.ErrorCode == "" && re.Response != nil && re.Response.StatusCode < 500 {
			// A 4xx without an OAuth error body, such as a proxy's.
			temporary = true
		}
		return &TokenError{Account: account, Temporary: temporary, Code: re.ErrorCode, Err: err}
	}
	// Network errors, timeouts and bodies that are not JSON.
	return &TokenError{Account: account, Temporary: true, Err: err}
}

// AccountState is the cached token state of one account.
type AccountState struct {
	Account     string
	Expiry      time.Time
	LastRefresh time.Time
	LastError   error
}

// State returns the cache state of every account it has seen.
func (t *Tokens) State() []AccountState {
	t.mu.Lock()
	entries := make(map[string]*accountTokens, len(t.accounts))
	for k, v := range t.accounts {
		entries[k] = v
	}
	t.mu.Unlock()

	states := make([]AccountState, 0, len(entries))
	for account, e := range entries {
		e.mu.Lock()
		s := AccountState{Account: account, LastRefresh: e.lastRefresh, LastError: e.lastError}
		if e.token != nil {
			s.Expiry = e.token.Expiry
		}
		e.mu.Unlock()
		states = append(states, s)
	}
	return states
}

// Reconfigure replaces the providers and the timeout of token requests,
// after the configuration was reloaded. Cached tokens stay.
func (t *Tokens) Reconfigure(providers map[string]*Provider, timeout time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.providers = providers
	t.Timeout = timeout
}

// settings returns the providers and the request timeout in effect.
func (t *Tokens) settings() (map[string]*Provider, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.providers, t.Timeout
}

// Refresh gets a new access token for the account even when the cached
// one is still valid, and returns its expiry. bridge check --online uses
// it to prove that the refresh token works.
func (t *Tokens) Refresh(ctx context.Context, provider, account string) (time.Time, error) {
	e := t.entry(account)
	select {
	case e.refresh <- struct{}{}:
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
	defer func() { <-e.refresh }()

	if _, err := t.refreshLocked(context.WithoutCancel(ctx), e, provider, account); err != nil {
		return time.Time{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.token.Expiry, nil
}
