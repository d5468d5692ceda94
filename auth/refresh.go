package auth

import (
	"context"
	"sync"
	"time"
)

// DefaultInUse is how long after its last use an account counts as in
// use for the background refresh.
const DefaultInUse = 30 * time.Minute

// aheadRetry is how long the background refresh waits after an attempt
// before it tries the same account again, so a token endpoint that keeps
// failing gets a request a minute, not one per session.
const aheadRetry = time.Minute

// refresher is the background refresh: a loop that checks the accounts
// in use, and the refreshes it or AccessToken start.
type refresher struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// SetRefreshAhead sets how long before its expiry the access token of an
// account in use is refreshed in the background, so that no session waits
// for the token endpoint. A token is never refreshed ahead before half
// its lifetime has passed. Zero turns the background refresh off; tokens
// are then refreshed only when a session needs one. It may be called at
// any time, such as after a reload.
func (t *Tokens) SetRefreshAhead(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refreshAhead = d
}

// Start starts the background refresh: every few seconds, it refreshes
// the tokens of the accounts used within InUse that are due. AccessToken
// also starts a refresh when it returns a token that is due. Without
// Start, tokens are refreshed only when a session needs one. Stop ends
// it.
func (t *Tokens) Start() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.background != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &refresher{ctx: ctx, cancel: cancel}
	t.background = r
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t.refreshLoop(ctx)
	}()
}

// Stop ends the background refresh, cancels the refreshes it started and
// waits for them.
func (t *Tokens) Stop() {
	t.mu.Lock()
	r := t.background
	t.background = nil
	t.mu.Unlock()
	if r == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
}

func (t *Tokens) refreshLoop(ctx context.Context) {
	for {
		timer := time.NewTimer(t.tick())
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case now := <-timer.C:
			t.refreshDue(now)
		}
	}
}

// tick returns how often the loop checks: four times per margin, between
// 100 milliseconds and 30 seconds.
func (t *Tokens) tick() time.Duration {
	t.mu.Lock()
	ahead := t.refreshAhead
	t.mu.Unlock()
	return min(max(ahead/4, 100*time.Millisecond), 30*time.Second)
}

// refreshDue starts a refresh for each account in use whose token is due.
func (t *Tokens) refreshDue(now time.Time) {
	t.mu.Lock()
	entries := make(map[string]*accountTokens, len(t.accounts))
	for account, e := range t.accounts {
		entries[account] = e
	}
	t.mu.Unlock()

	for account, e := range entries {
		e.mu.Lock()
		inUse := now.Sub(e.lastUsed) < t.InUse
		provider := e.provider
		e.mu.Unlock()
		if inUse && t.due(e, now) {
			t.refreshInBackground(e, provider, account)
		}
	}
}

// due reports whether the account's token is still valid but within the
// refresh-ahead margin, capped at half the token's lifetime, and the last
// attempt was long enough ago.
func (t *Tokens) due(e *accountTokens, now time.Time) bool {
	t.mu.Lock()
	ahead := t.refreshAhead
	running := t.background != nil
	t.mu.Unlock()
	if ahead <= 0 || !running {
		return false
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.token == nil || e.token.Expiry.IsZero() || now.Sub(e.lastAttempt) < min(aheadRetry, ahead/2) {
		return false
	}
	left := e.token.Expiry.Sub(now)
	if left <= t.Margin {
		// Expired for AccessToken, which refreshes it while the
		// session waits.
		return false
	}
	lifetime := e.token.Expiry.Sub(e.lastRefresh)
	return left <= min(ahead, lifetime/2)
}

// refreshInBackground refreshes the account's token in a goroutine,
// unless a refresh of the account is already running.
func (t *Tokens) refreshInBackground(e *accountTokens, provider, account string) {
	t.mu.Lock()
	r := t.background
	if r == nil {
		t.mu.Unlock()
		return
	}
	select {
	case e.refresh <- struct{}{}:
	default:
		// A refresh is in flight; its token serves everyone.
		t.mu.Unlock()
		return
	}
	// Added under t.mu, so Stop cannot be waiting yet.
	r.wg.Add(1)
	t.mu.Unlock()

	go func() {
		defer r.wg.Done()
		defer func() { <-e.refresh }()
		if !t.due(e, time.Now()) {
			// Another refresh finished in the meantime.
			return
		}
		if _, err := t.refreshLocked(r.ctx, e, provider, account); err != nil {
			t.log.Warn("refreshing access token ahead of expiry; sessions keep the current token until it expires",
				"account", account, "err", err)
		}
	}()
}
