package proxy

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/internal/bridgetest"
)

var testThrottle = config.Throttle{
	FreeFailures: 3,
	BaseDelay:    time.Second,
	MaxDelay:     8 * time.Second,
	LockoutAfter: 10,
	Lockout:      15 * time.Minute,
	Window:       30 * time.Minute,
}

// testClock is a clock that only moves when a test advances it.
type testClock struct{ now atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.now.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.now.Load()) }
func (c *testClock) Advance(d time.Duration) { c.now.Add(int64(d)) }

// install makes th read the time from c.
func (c *testClock) install(th *throttle) {
	th.mu.Lock()
	defer th.mu.Unlock()
	th.now = c.Now
}

func newClockedThrottle(cfg config.Throttle) (*throttle, *testClock) {
	th := newThrottle(func() config.Throttle { return cfg })
	clock := newTestClock()
	clock.install(th)
	return th, clock
}

func TestThrottleDelaysGrowThenLockOut(t *testing.T) {
	th, _ := newClockedThrottle(testThrottle)
	want := []time.Duration{0, 0, 0, 1 * time.Second, 2 * time.Second, 4 * time.Second,
		8 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second}
	for i, w := range want {
		if got := th.delay("192.0.2.1", "alice"); got != w {
			t.Errorf("delay after %d failures = %v, want %v", i, got, w)
		}
		locked := th.failure("192.0.2.1", "alice")
		if locked != (i == len(want)-1) {
			t.Errorf("failure %d started a lockout: %v", i+1, locked)
		}
	}
	if got := th.delay("192.0.2.1", "alice"); got >= 0 {
		t.Errorf("delay after %d failures = %v, want a lockout", len(want), got)
	}
}

func TestThrottleLockoutStartsOnce(t *testing.T) {
	th, clock := newClockedThrottle(testThrottle)
	lockouts := 0
	for range 25 {
		if th.failure("192.0.2.1", "alice") {
			lockouts++
		}
		clock.Advance(time.Second)
	}
	if lockouts != 1 {
		t.Errorf("25 failures within one lockout started %d lockouts, want 1", lockouts)
	}
}

func TestThrottleLockoutExpires(t *testing.T) {
	th, clock := newClockedThrottle(testThrottle)
	for range testThrottle.LockoutAfter {
		th.failure("192.0.2.1", "alice")
	}
	clock.Advance(testThrottle.Lockout - time.Second)
	if got := th.delay("192.0.2.1", "alice"); got >= 0 {
		t.Errorf("delay just before the lockout ends = %v, want a lockout", got)
	}
	clock.Advance(time.Second)
	if got := th.delay("192.0.2.1", "alice"); got != 0 {
		t.Errorf("delay after the lockout = %v, want 0", got)
	}

	// The count starts again, so a new lockout needs as many failures.
	for i := range testThrottle.LockoutAfter {
		if locked := th.failure("192.0.2.1", "alice"); locked != (i == testThrottle.LockoutAfter-1) {
			t.Errorf("failure %d after the lockout started a lockout: %v", i+1, locked)
		}
	}
}

func TestThrottleWindowForgetsFailures(t *testing.T) {
	th, clock := newClockedThrottle(testThrottle)
	for range 6 {
		th.failure("192.0.2.1", "alice")
	}
	if got := th.delay("192.0.2.1", "alice"); got == 0 {
		t.Fatal("no delay after 6 failures")
	}
	clock.Advance(testThrottle.Window + time.Second)
	if got := th.delay("192.0.2.1", "alice"); got != 0 {
		t.Errorf("delay after the window = %v, want 0", got)
	}
}

func TestThrottlePerUsernameAcrossAddresses(t *testing.T) {
	th, _ := newClockedThrottle(testThrottle)
	for i := range testThrottle.LockoutAfter {
		th.failure(fmt.Sprintf("192.0.2.%d", i), "alice")
	}
	if got := th.delay("198.51.100.1", "alice"); got >= 0 {
		t.Errorf("alice from a new address: delay %v, want a lockout", got)
	}
	if got := th.delay("198.51.100.1", "bob"); got != 0 {
		t.Errorf("bob from a new address: delay %v, want 0", got)
	}
}

func TestThrottlePerAddressAcrossUsernames(t *testing.T) {
	th, _ := newClockedThrottle(testThrottle)
	for i := range testThrottle.LockoutAfter {
		th.failure("192.0.2.1", fmt.Sprintf("user%d", i))
	}
	if got := th.delay("192.0.2.1", "someone-else"); got >= 0 {
		t.Errorf("new username from the scanning address: delay %v, want a lockout", got)
	}
	if got := th.delay("192.0.2.2", "someone-else"); got != 0 {
		t.Errorf("new username from another address: delay %v, want 0", got)
	}
}

func TestThrottleSuccessClearsUsernameOnly(t *testing.T) {
	th, _ := newClockedThrottle(testThrottle)
	for range 5 {
		th.failure("192.0.2.1", "alice")
	}
	th.success("192.0.2.1", "alice")
	if got := th.delay("192.0.2.2", "alice"); got != 0 {
		t.Errorf("alice from another address after a success: delay %v, want 0", got)
	}
	if got := th.delay("192.0.2.1", "bob"); got == 0 {
		t.Error("the address's failures were cleared by one valid login")
	}
}

// TestAuthLockoutEndToEnd runs the throttle through real sessions: wrong
// passwords get 535 until the lockout, then even the right password gets
// 454 until it ends, and the lockout is logged once.
func TestAuthLockoutEndToEnd(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: `throttle:
  free_failures: 1
  base_delay: 1ms
  max_delay: 2ms
  lockout_after: 3
  lockout: 1h
  window: 1h
`})
	clock := newTestClock()
	clock.install(h.srv.throttle)

	login := func(password string) error {
		c := h.dial(t)
		defer c.Close()
		return c.Auth(sasl.NewPlainClient("", testUser, password))
	}
	for i := range 3 {
		if err := login("wrong"); smtpCode(err) != 535 {
			t.Fatalf("wrong password %d: %v, want 535", i+1, err)
		}
	}
	for i := range 3 {
		err := login(testPassword)
		se, ok := err.(*smtp.SMTPError)
		if !ok || se.Code != 454 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 0}) {
			t.Fatalf("right password %d during the lockout: %v, want 454 4.7.0", i+1, err)
		}
	}
	if n := strings.Count(h.logs.String(), "locking out AUTH"); n != 1 {
		t.Errorf("lockout logged %d times, want once:\n%s", n, h.logs)
	}

	clock.Advance(time.Hour)
	if err := login(testPassword); err != nil {
		t.Fatalf("right password after the lockout: %v", err)
	}

	// A second lockout is logged again.
	for range 3 {
		login("wrong")
	}
	if n := strings.Count(h.logs.String(), "locking out AUTH"); n != 2 {
		t.Errorf("two lockouts logged %d times, want twice", n)
	}
}

func TestLockedOutLoginDoesNotTouchStore(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "throttle:\n  lockout_after: 1\n  lockout: 1h\n"})
	clock := newTestClock()
	clock.install(h.srv.throttle)
	c := h.dial(t)
	if err := c.Auth(sasl.NewPlainClient("", "nobody", "x")); smtpCode(err) != 535 {
		t.Fatalf("first failure: %v, want 535", err)
	}
	// The address is now locked out, so even a valid login gets 454 and
	// the upstream is never reached.
	c = h.dial(t)
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); smtpCode(err) != 454 {
		t.Fatalf("login from the locked address: %v, want 454", err)
	}
	if n := h.Gmail.Conns(); n != 0 {
		t.Errorf("upstream saw %d connections", n)
	}
}

func TestThrottleParallelChecksBounded(t *testing.T) {
	th, _ := newClockedThrottle(testThrottle)
	// Checks of different passwords that start together, before any has
	// failed, count against the lockout, so parallel connections cannot
	// try more passwords.
	allowed := 0
	for i := range 60 {
		if th.begin("192.0.2.1", "alice", fmt.Sprint("guess", i)) >= 0 {
			allowed++
		}
	}
	if allowed != testThrottle.LockoutAfter {
		t.Errorf("%d parallel checks allowed, want %d", allowed, testThrottle.LockoutAfter)
	}
	for i := range allowed {
		th.end("192.0.2.1", "alice", fmt.Sprint("guess", i))
	}
	if got := th.delay("192.0.2.1", "alice"); got != 0 {
		t.Errorf("delay after the checks ended without failures = %v, want 0", got)
	}
}

func TestThrottleParallelSamePasswordAllowed(t *testing.T) {
	th, _ := newClockedThrottle(testThrottle)
	// A client that opens many connections at once logs in with one
	// password on each: that is one password tried, and no delay.
	for i := range 60 {
		if got := th.begin("192.0.2.1", "alice", "the password"); got != 0 {
			t.Fatalf("parallel login %d with the same password: wait %v, want 0", i+1, got)
		}
	}
	// A different password still counts as one more.
	if got := th.begin("192.0.2.1", "alice", "a guess"); got < 0 {
		t.Errorf("a second password while the first is checked: wait %v, want no lockout", got)
	}
	th.end("192.0.2.1", "alice", "a guess")
	for range 60 {
		th.end("192.0.2.1", "alice", "the password")
	}
	if got := th.delay("192.0.2.1", "alice"); got != 0 {
		t.Errorf("delay after the checks ended = %v, want 0", got)
	}
}

func TestThrottleParallelLoginsEndToEnd(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: `throttle:
  free_failures: 100
  lockout_after: 5
  lockout: 1m
`})
	const attempts = 30
	codes := make(chan int, attempts)
	for i := range attempts {
		go func() {
			c, err := smtp.Dial(h.addr)
			if err != nil {
				codes <- -1
				return
			}
			defer c.Close()
			// Each guess is a different password; parallel logins
			// with one password try only that one.
			pw := fmt.Sprint("wrong", i)
			if i == attempts-1 {
				pw = testPassword
			}
			codes <- smtpCode(c.Auth(sasl.NewPlainClient("", testUser, pw)))
		}()
	}
	checked := 0
	for range attempts {
		code := <-codes
		if code == 535 || code == 0 {
			checked++
		}
	}
	if checked > 5 {
		t.Errorf("%d of %d parallel logins had their password checked, want at most 5", checked, attempts)
	}
}
