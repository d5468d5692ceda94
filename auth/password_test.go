package auth

import (
	"strings"
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
		"$argon2id$v=19$m=99999999,t=1,p=1$AAAA$AAAA"} {
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
	for b.Loop() {
		if _, err := HashPassword("benchmark password"); err != nil {
			b.Fatal(err)
		}
	}
}
