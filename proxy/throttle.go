package proxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
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

	// key is the random HMAC key of attempt ids.
	key []byte

	mu      sync.Mutex
	entries map[string]*failures
}

type failures struct {
	count int
	// pending counts the checks under way by the username and password
	// they try. Each different password counts against the lockout,
	// because it may fail, so parallel logins cannot try more passwords
	// than the lockout allows. Parallel logins with the same username and
	// password count once: PasswordChecker hashes them once, and they try
	// one password.
	pending     map[attemptID]int
	last        time.Time
	lockedUntil time.Time
}

// attemptID is the HMAC-SHA-256 of a username and a password, under a
// random key that never leaves the process's memory.
type attemptID [sha256.Size]byte

func newThrottle(settings func() config.Throttle) *throttle {
	key := make([]byte, 32)
	rand.Read(key) // never returns an error since Go 1.24
	return &throttle{settings: settings, now: time.Now, key: key, entries: make(map[string]*failures)}
}

func (t *throttle) attempt(user, password string) attemptID {
	mac := hmac.New(sha256.New, t.key)
	mac.Write([]byte(user))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	var id attemptID
	mac.Sum(id[:0])
	return id
}

func throttleKeys(ip, user string) []string {
	return []string{"ip " + ip, "user " + user}
}

// begin returns how long to wait before checking a login of user with
// password. It returns a negative duration while the client address or
// the username is locked out, or while the checks under way of other
// passwords could reach the lockout. Unless it returns a negative
// duration, the caller must call end with the same arguments when the
// check is done.
func (t *throttle) begin(ip, user, password string) time.Duration {
	id := t.attempt(user, password)
	return t.check(ip, user, &id)
}

// delay returns what begin would for a password that no check under way
// tries, without counting a check.
func (t *throttle) delay(ip, user string) time.Duration {
	return t.check(ip, user, nil)
}

// check returns the wait for a login, and with id set counts its check as
// under way.
func (t *throttle) check(ip, user string, id *attemptID) time.Duration {
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
		// The checks under way of other passwords, which may fail.
		others := len(f.pending)
		if id != nil && f.pending[*id] > 0 {
			others--
		}
		attempts := f.count + others
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
	if id == nil {
		return wait
	}
	for _, k := range keys {
		f := t.entries[k]
		if f == nil {
			f = &failures{last: now}
			t.entries[k] = f
		}
		if f.pending == nil {
			f.pending = make(map[attemptID]int)
		}
		f.pending[*id]++
	}
	return wait
}

// end marks a check that begin allowed as done.
func (t *throttle) end(ip, user, password string) {
	id := t.attempt(user, password)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range throttleKeys(ip, user) {
		f := t.entries[k]
		if f == nil || f.pending[id] == 0 {
			continue
		}
		if f.pending[id]--; f.pending[id] == 0 {
			delete(f.pending, id)
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
	if len(f.pending) == 0 && now.Sub(f.last) > cfg.Window && !now.Before(f.lockedUntil) {
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
