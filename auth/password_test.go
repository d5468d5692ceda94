package auth

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHashPasswordVerifies(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash = %q", h)
	}
	ok, err := verifyHash(h, "correct horse")
	if err != nil || !ok {
		t.Errorf("right password: ok=%v err=%v", ok, err)
	}
	ok, err = verifyHash(h, "wrong horse")
	if err != nil || ok {
		t.Errorf("wrong password: ok=%v err=%v", ok, err)
	}
}

func TestHashesAreSalted(t *testing.T) {
	a, _ := HashPassword("same")
	b, _ := HashPassword("same")
	if a == b {
		t.Error("two hashes of one password are equal")
	}
}

func TestParseHashRejectsGarbage(t *testing.T) {
	for _, h := range []string{"", "plain", "$argon2i$v=19$m=1,t=1,p=1$AAAA$AAAA", "$argon2id$v=19$m=x$a$b",
		"$argon2id$v=19$m=99999999,t=1,p=1$AAAA$AAAA",
		"$argon2id$v=19$m=65537,t=1,p=1$AAAA$AAAA",
		"$argon2id$v=19$m=19456,t=9,p=1$AAAA$AAAA",
		"$argon2id$v=19$m=19456,t=2,p=9$AAAA$AAAA"} {
		if _, err := parseHash(h); err == nil {
			t.Errorf("parseHash(%q) accepted", h)
		}
	}
}

func TestCheckerUnknownUserNeverMatches(t *testing.T) {
	c, err := NewPasswordChecker(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if c.Check("", "no such user") {
		t.Error("empty hash matched the dummy password")
	}
}

func TestCheckerCachesSuccessOnly(t *testing.T) {
	c, err := NewPasswordChecker(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := HashPassword("pw")
	if !c.Check(h, "pw") {
		t.Fatal("right password rejected")
	}
	if len(c.cache) != 1 {
		t.Errorf("cache size = %d, want 1", len(c.cache))
	}
	if c.Check(h, "pw2") {
		t.Error("wrong password accepted")
	}
	if len(c.cache) != 1 {
		t.Errorf("failure was cached: size %d", len(c.cache))
	}
	for k := range c.cache {
		if strings.Contains(string(k[:]), "pw") {
			t.Error("cache key contains the password")
		}
	}
	// A changed hash (new password) does not hit the old entry.
	h2, _ := HashPassword("pw")
	c.Check(h2, "pw")
	if len(c.cache) != 2 {
		t.Errorf("cache size = %d, want 2", len(c.cache))
	}
}

func TestDummyHashMatchesHashPassword(t *testing.T) {
	dummy, err := parseHash(dummyHash)
	if err != nil {
		t.Fatalf("dummy hash: %v", err)
	}
	h, _ := HashPassword("x")
	fresh, err := parseHash(h)
	if err != nil {
		t.Fatal(err)
	}
	// An unknown user must cost what a known one costs.
	if dummy.memory != fresh.memory || dummy.time != fresh.time || dummy.threads != fresh.threads ||
		len(dummy.key) != len(fresh.key) || len(dummy.salt) != len(fresh.salt) {
		t.Errorf("dummy hash parameters %+v differ from HashPassword's %+v", dummy, fresh)
	}
}

func TestParseHashAcceptsBounds(t *testing.T) {
	h := "$argon2id$v=19$m=65536,t=8,p=8$AAAA$AAAA"
	if _, err := parseHash(h); err != nil {
		t.Errorf("parseHash(%q): %v", h, err)
	}
}

// countingChecker returns a checker whose hash verifications are counted
// and run gate first, if it is not nil.
func countingChecker(t *testing.T, ttl time.Duration, gate chan struct{}) (*PasswordChecker, *atomic.Int64) {
	t.Helper()
	c, err := NewPasswordChecker(ttl)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	c.verify = func(hash, password string) (bool, error) {
		n.Add(1)
		if gate != nil {
			<-gate
		}
		return verifyHash(hash, password)
	}
	return c, &n
}

func TestCheckerCacheHitSkipsHash(t *testing.T) {
	c, n := countingChecker(t, time.Minute, nil)
	h, _ := HashPassword("pw")
	for range 3 {
		if !c.Check(h, "pw") {
			t.Fatal("right password rejected")
		}
	}
	if got := n.Load(); got != 1 {
		t.Errorf("hashes computed = %d, want 1", got)
	}
	// Failures are never served from the cache.
	for range 2 {
		if c.Check(h, "wrong") {
			t.Fatal("wrong password accepted")
		}
	}
	if got := n.Load(); got != 3 {
		t.Errorf("hashes computed = %d, want 3", got)
	}
}

func TestCheckerCacheExpires(t *testing.T) {
	c, n := countingChecker(t, 50*time.Millisecond, nil)
	h, _ := HashPassword("pw")
	c.Check(h, "pw")
	time.Sleep(100 * time.Millisecond)
	if !c.Check(h, "pw") {
		t.Fatal("right password rejected after expiry")
	}
	if got := n.Load(); got != 2 {
		t.Errorf("hashes computed = %d, want 2", got)
	}
}

func TestCheckerCacheOff(t *testing.T) {
	c, n := countingChecker(t, 0, nil)
	h, _ := HashPassword("pw")
	c.Check(h, "pw")
	c.Check(h, "pw")
	if got := n.Load(); got != 2 {
		t.Errorf("hashes computed = %d, want 2", got)
	}
	if len(c.cache) != 0 {
		t.Errorf("cache size = %d with the cache off", len(c.cache))
	}
}

func TestCheckerCacheBounded(t *testing.T) {
	c, _ := countingChecker(t, time.Minute, nil)
	c.maxEntries = 3
	// The eviction does not depend on argon2id, so a cheap stand-in
	// keeps the test fast.
	c.verify = func(hash, password string) (bool, error) { return hash == "hash of "+password, nil }
	var hashes []string
	for i := range 5 {
		h := fmt.Sprint("hash of pw", i)
		hashes = append(hashes, h)
		if !c.Check(h, fmt.Sprint("pw", i)) {
			t.Fatal("right password rejected")
		}
		// Expiry times must differ for the eviction order to be known.
		time.Sleep(2 * time.Millisecond)
	}
	if len(c.cache) != 3 {
		t.Fatalf("cache size = %d, want 3", len(c.cache))
	}
	for i, h := range hashes {
		_, kept := c.cache[c.id(h, fmt.Sprint("pw", i))]
		if want := i >= 2; kept != want {
			t.Errorf("entry %d kept = %v, want %v", i, kept, want)
		}
	}
}

func TestCheckerConcurrentChecksShareHash(t *testing.T) {
	for _, tc := range []struct {
		name, password string
		want           bool
	}{
		{"right password", "pw", true},
		{"wrong password", "guess", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gate := make(chan struct{})
			c, n := countingChecker(t, time.Minute, gate)
			h, _ := HashPassword("pw")

			const callers = 50
			results := make(chan bool, callers)
			for range callers {
				go func() { results <- c.Check(h, tc.password) }()
			}
			// Wait until every caller but the one hashing waits for it.
			id := c.id(h, tc.password)
			deadline := time.Now().Add(5 * time.Second)
			for {
				c.mu.Lock()
				p := c.inflight[id]
				waiting := p != nil && p.waiters == callers-1
				c.mu.Unlock()
				if waiting {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("callers did not join the hash in progress")
				}
				time.Sleep(time.Millisecond)
			}
			close(gate)

			for range callers {
				if got := <-results; got != tc.want {
					t.Errorf("Check = %v, want %v", got, tc.want)
				}
			}
			if got := n.Load(); got != 1 {
				t.Errorf("hashes computed = %d, want 1", got)
			}
		})
	}
}

func TestCheckerUnknownUserNotCached(t *testing.T) {
	c, _ := countingChecker(t, time.Minute, nil)
	// A user that does not exist is checked against the dummy hash. Even
	// the dummy's own password must not match or be remembered.
	if c.Check("", "no such user") {
		t.Error("unknown user matched")
	}
	if len(c.cache) != 0 {
		t.Errorf("cache size = %d after an unknown user", len(c.cache))
	}
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		p, err := GeneratePassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 20 {
			t.Fatalf("length %d", len(p))
		}
		if strings.ContainsAny(p, "0O1lI") {
			t.Errorf("look-alike character in %q", p)
		}
		if seen[p] {
			t.Fatal("repeated password")
		}
		seen[p] = true
	}
}

func BenchmarkHashPassword(b *testing.B) {
	start := processCPU()
	for b.Loop() {
		if _, err := HashPassword("benchmark password"); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start)
}

// BenchmarkCheckPassword is the cost of one login that the cache does
// not serve: one argon2id hash with the parameters of HashPassword.
func BenchmarkCheckPassword(b *testing.B) {
	c, err := NewPasswordChecker(0)
	if err != nil {
		b.Fatal(err)
	}
	h, _ := HashPassword("benchmark password")
	start := processCPU()
	for b.Loop() {
		if !c.Check(h, "benchmark password") {
			b.Fatal("right password rejected")
		}
	}
	reportCPU(b, start)
}

// BenchmarkCheckPasswordCached is the cost of a repeat login.
func BenchmarkCheckPasswordCached(b *testing.B) {
	c, err := NewPasswordChecker(time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	h, _ := HashPassword("benchmark password")
	c.Check(h, "benchmark password")
	start := processCPU()
	for b.Loop() {
		if !c.Check(h, "benchmark password") {
			b.Fatal("right password rejected")
		}
	}
	reportCPU(b, start)
}

// reportCPU reports the process CPU time per operation since start,
// which includes the garbage collector's work for the 19 MiB that each
// hash allocates.
func reportCPU(b *testing.B, start time.Duration) {
	if start < 0 || b.N == 0 {
		return
	}
	b.ReportMetric(float64(processCPU()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}
