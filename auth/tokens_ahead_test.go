package auth_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakeoauth"
)

const aheadAccount = "scanner@example.com"

// newShortTokens returns a token cache whose provider issues access
// tokens that live for lifetime, with a margin short enough for them.
func newShortTokens(t *testing.T, lifetime time.Duration) (*bridgetest.Env, *auth.Tokens) {
	t.Helper()
	env := bridgetest.New(t, bridgetest.Options{AccessTokenLifetime: lifetime})
	st := env.OpenStore(t)
	env.Seed(t, st, "printer", "password", aheadAccount)
	providers, err := auth.NewProviders(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.NewTokens(st, providers, slog.New(slog.DiscardHandler))
	tokens.Margin = 50 * time.Millisecond
	t.Cleanup(tokens.Stop)
	return env, tokens
}

// waitRequests waits until the provider has seen n refresh requests.
func waitRequests(t *testing.T, oauth *fakeoauth.Server, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for oauth.RefreshRequests() < n {
		if time.Now().After(deadline) {
			t.Fatalf("refresh requests = %d after %v, want %d", oauth.RefreshRequests(), timeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stateOf returns the cache state of the test account.
func stateOf(tokens *auth.Tokens) auth.AccountState {
	for _, s := range tokens.State() {
		if s.Account == aheadAccount {
			return s
		}
	}
	return auth.AccountState{}
}

// lastRefresh returns when the cache last got a token for the account.
func lastRefresh(tokens *auth.Tokens) time.Time { return stateOf(tokens).LastRefresh }

// waitRefreshed waits until the cache holds a token newer than after. The
// provider counts a request before the cache has its response.
func waitRefreshed(t *testing.T, tokens *auth.Tokens, after time.Time, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !lastRefresh(tokens).After(after) {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// concurrentTokens calls AccessToken from n goroutines released at once
// and returns the distinct tokens they got.
func concurrentTokens(t *testing.T, env *bridgetest.Env, tokens *auth.Tokens, n int) map[string]bool {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]bool{}
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tok, err := tokens.AccessToken(context.Background(), env.Provider, aheadAccount)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got[tok] = true
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return got
}

func TestAccessTokenConcurrentCallersOneRequest(t *testing.T) {
	t.Parallel()
	env, tokens := newShortTokens(t, time.Hour)
	got := concurrentTokens(t, env, tokens, 200)
	if n := env.OAuth.RefreshRequests(); n != 1 {
		t.Errorf("refresh requests = %d, want 1", n)
	}
	if len(got) != 1 {
		t.Errorf("callers got %d different tokens, want 1", len(got))
	}
}

func TestRefreshAheadInBackground(t *testing.T) {
	t.Parallel()
	env, tokens := newShortTokens(t, 2*time.Second)
	tokens.SetRefreshAhead(800 * time.Millisecond)
	tokens.Start()

	first, err := tokens.AccessToken(context.Background(), env.Provider, aheadAccount)
	if err != nil {
		t.Fatal(err)
	}
	// Due 800 ms before expiry; nothing asks for a token meanwhile.
	waitRefreshed(t, tokens, lastRefresh(tokens), 5*time.Second)

	second, err := tokens.AccessToken(context.Background(), env.Provider, aheadAccount)
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Error("AccessToken returned the old token after the background refresh")
	}
	if n := env.OAuth.RefreshRequests(); n != 2 {
		t.Errorf("refresh requests = %d, want 2: the session had to wait for one", n)
	}
}

func TestRefreshAheadDueTokenOneRequest(t *testing.T) {
	t.Parallel()
	env, tokens := newShortTokens(t, 2*time.Second)
	tokens.SetRefreshAhead(800 * time.Millisecond)
	// The account counts as idle at once, so the loop leaves it alone
	// and only AccessToken can start the refresh.
	tokens.InUse = time.Millisecond
	tokens.Start()
	if _, err := tokens.AccessToken(context.Background(), env.Provider, aheadAccount); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1300 * time.Millisecond)
	if n := env.OAuth.RefreshRequests(); n != 1 {
		t.Fatalf("refresh requests of an idle account = %d, want 1", n)
	}

	// The token is due but still valid: 200 sessions at once get it
	// without waiting, and one of them starts the only refresh.
	got := concurrentTokens(t, env, tokens, 200)
	waitRequests(t, env.OAuth, 2, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	if n := env.OAuth.RefreshRequests(); n != 2 {
		t.Errorf("refresh requests = %d, want 2", n)
	}
	if len(got) > 2 {
		t.Errorf("callers got %d different tokens, want at most 2", len(got))
	}
}

func TestRefreshAheadSkipped(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(*auth.Tokens)
		after func(*auth.Tokens)
	}{
		{"account idle", func(tk *auth.Tokens) {
			tk.InUse = 100 * time.Millisecond
			tk.Start()
		}, nil},
		{"not started", func(*auth.Tokens) {}, nil},
		{"stopped", func(tk *auth.Tokens) { tk.Start() }, func(tk *auth.Tokens) { tk.Stop() }},
		{"margin zero", func(tk *auth.Tokens) {
			tk.SetRefreshAhead(0)
			tk.Start()
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env, tokens := newShortTokens(t, 2*time.Second)
			tokens.SetRefreshAhead(800 * time.Millisecond)
			tc.setup(tokens)
			if _, err := tokens.AccessToken(context.Background(), env.Provider, aheadAccount); err != nil {
				t.Fatal(err)
			}
			if tc.after != nil {
				tc.after(tokens)
			}
			// Past the point where the token is due, short of expiry.
			time.Sleep(1500 * time.Millisecond)
			if n := env.OAuth.RefreshRequests(); n != 1 {
				t.Errorf("refresh requests = %d, want 1", n)
			}
		})
	}
}

func TestRefreshAheadFailureKeepsToken(t *testing.T) {
	t.Parallel()
	// Due 1.6 s before expiry, which leaves a loaded machine time to read
	// the token before it expires.
	env, tokens := newShortTokens(t, 4*time.Second)
	tokens.SetRefreshAhead(1600 * time.Millisecond)
	tokens.Start()
	first, err := tokens.AccessToken(context.Background(), env.Provider, aheadAccount)
	if err != nil {
		t.Fatal(err)
	}

	env.OAuth.SetTokenFault(fakeoauth.ServerError)
	// The provider counts the request before the cache has the failure.
	deadline := time.Now().Add(5 * time.Second)
	for stateOf(tokens).LastError == nil {
		if time.Now().After(deadline) {
			t.Fatalf("State shows no failed refresh after 5s; refresh requests = %d", env.OAuth.RefreshRequests())
		}
		time.Sleep(5 * time.Millisecond)
	}

	// The failed background refresh does not reach sessions: the current
	// token is still valid, so they get it.
	got, err := tokens.AccessToken(context.Background(), env.Provider, aheadAccount)
	if err != nil {
		t.Fatalf("AccessToken after a failed background refresh: %v", err)
	}
	if got != first {
		t.Error("AccessToken returned a different token")
	}
}
