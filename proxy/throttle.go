package proxy

import (
	"sync"
	"time"

	"github.com/bridgemail/bridge/config"
)

// throttle slows down and then locks out repeated AUTH failures, per
// client address and per username, so a password cannot be guessed at
// line speed. It is safe for concurrent use.
type throttle struct {
	settings func() config.Throttle
	// now is time.Now, or a test's clock; it is called with mu held.
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*failures
}

type failures struct {
	count int
	// pending counts the checks under way, which may all fail: parallel
	// logins must not get more checks than the lockout allows.
	pending     int
	last        time.Time
	lockedUntil time.Time
}

func newThrottle(settings func() config.Throttle) *throttle {
	return &throttle{settings: settings, now: time.Now, entries: make(map[string]*failures)}
}

func throttleKeys(ip, user string) []string {
	return []string{"ip " + ip, "user " + user}
}

// begin returns how long to wait before checking a login, or a negative
// duration while the client address or the username is locked out, or
// while the checks under way could reach the lockout. Unless it returns a
// negative duration, the caller must call end when the check is done.
func (t *throttle) begin(ip, user string) time.Duration {
	return t.check(ip, user, true)
}

// delay returns what begin would, without counting a check under way.
func (t *throttle) delay(ip, user string) time.Duration {
	return t.check(ip, user, false)
}

func (t *throttle) check(ip, user string, reserve bool) time.Duration {
	cfg := t.settings()
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()

	var wait time.Duration
	keys := throttleKeys(ip, user)
	for _, k := range keys {
		f := t.current(k, cfg, now)
		if f == nil {
			continue
		}
		if now.Before(f.lockedUntil) {
			return -1
		}
		attempts := f.count + f.pending
		if cfg.LockoutAfter > 0 && attempts >= cfg.LockoutAfter {
			return -1
		}
		if extra := attempts - cfg.FreeFailures; extra >= 0 {
			d := cfg.BaseDelay << min(extra, 20)
			if d > cfg.MaxDelay || d <= 0 {
				d = cfg.MaxDelay
			}
			wait = max(wait, d)
		}
	}
	if !reserve {
		return wait
	}
	for _, k := range keys {
		f := t.entries[k]
		if f == nil {
			f = &failures{last: now}
			t.entries[k] = f
		}
		f.pending++
	}
	return wait
}

// end marks a check that begin allowed as done.
func (t *throttle) end(ip, user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range throttleKeys(ip, user) {
		if f := t.entries[k]; f != nil && f.pending > 0 {
			f.pending--
		}
	}
}

// failure records a failed login and reports whether it started a
// lockout, so the caller logs each lockout once.
func (t *throttle) failure(ip, user string) (lockedNow bool) {
	cfg := t.settings()
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()

	for _, k := range throttleKeys(ip, user) {
		f := t.current(k, cfg, now)
		if f == nil {
			f = &failures{}
			t.entries[k] = f
		}
		f.count++
		f.last = now
		if cfg.LockoutAfter > 0 && f.count >= cfg.LockoutAfter && !now.Before(f.lockedUntil) {
			f.lockedUntil = now.Add(cfg.Lockout)
			f.count = 0
			lockedNow = true
		}
	}
	if len(t.entries) > 100000 {
		t.prune(cfg, now)
	}
	return lockedNow
}

// success clears the failures of the username; those of the address stay,
// so one valid login does not reset a scan of other usernames.
func (t *throttle) success(ip, user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.entries["user "+user]; f != nil {
		f.count = 0
	}
}

// current returns the live entry of key, dropping one whose failures and
// lockout have both expired.
func (t *throttle) current(key string, cfg config.Throttle, now time.Time) *failures {
	f, ok := t.entries[key]
	if !ok {
		return nil
	}
	if f.pending == 0 && now.Sub(f.last) > cfg.Window && !now.Before(f.lockedUntil) {
		delete(t.entries, key)
		return nil
	}
	return f
}

func (t *throttle) prune(cfg config.Throttle, now time.Time) {
	for k := range t.entries {
		t.current(k, cfg, now)
	}
}
