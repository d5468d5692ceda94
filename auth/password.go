package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters for new hashes. 19 MiB, two passes and one lane are
// OWASP's first recommended set; one hash costs about 30 ms of CPU on a
// 2020s x86-64 core (an estimate; BenchmarkHashPassword measures it).
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonKeyLen    = 32
	argonSaltLen   = 16
)

// ErrBadHash is returned for a stored hash that is not an argon2id PHC
// string.
var ErrBadHash = errors.New("invalid argon2id hash")

// HashPassword returns the argon2id hash of password in PHC string format:
// $argon2id$v=19$m=...,t=...,p=...$salt$key.
func HashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("generating salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

type argonHash struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

func parseHash(s string) (argonHash, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return argonHash{}, ErrBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return argonHash{}, ErrBadHash
	}
	var h argonHash
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &h.memory, &h.time, &h.threads); err != nil {
		return argonHash{}, ErrBadHash
	}
	var err error
	if h.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil {
		return argonHash{}, ErrBadHash
	}
	if h.key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(h.key) == 0 {
		return argonHash{}, ErrBadHash
	}
	if h.memory == 0 || h.time == 0 || h.threads == 0 || h.memory > 1<<20 {
		return argonHash{}, ErrBadHash
	}
	return h, nil
}

// verifyHash reports whether password matches hash, comparing in constant
// time.
func verifyHash(hash, password string) (bool, error) {
	h, err := parseHash(hash)
	if err != nil {
		return false, err
	}
	key := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1, nil
}

// GeneratePassword returns a random password of 20 characters from an
// alphabet without look-alikes, about 100 bits, for typing into a
// printer's settings page.
func GeneratePassword() (string, error) {
	const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	const length = 20
	buf := make([]byte, length)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generating password: %w", err)
	}
	out := make([]byte, length)
	for i, b := range buf {
		// 256 is not a multiple of len(alphabet); the bias of at most
		// one in 256 per character costs less than a bit in all.
		out[i] = alphabet[int(b)%len(alphabet)]
	}
	return string(out), nil
}

// PasswordChecker verifies local passwords. It bounds how many argon2id
// hashes run at once, so a burst of logins cannot take all memory, and it
// remembers successful logins for a short time in memory. It is safe for
// concurrent use.
type PasswordChecker struct {
	slots     chan struct{}
	dummyHash string
	cacheKey  []byte
	cacheTTL  time.Duration

	mu    sync.Mutex
	cache map[[sha256.Size]byte]time.Time
}

// DefaultCacheTTL is how long a successful login is remembered.
const DefaultCacheTTL = 5 * time.Minute

// NewPasswordChecker returns a checker that remembers successful logins
// for ttl; 0 turns the cache off.
func NewPasswordChecker(ttl time.Duration) (*PasswordChecker, error) {
	dummy, err := HashPassword("no such user")
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating cache key: %w", err)
	}
	return &PasswordChecker{
		slots:     make(chan struct{}, 2*runtime.GOMAXPROCS(0)),
		dummyHash: dummy,
		cacheKey:  key,
		cacheTTL:  ttl,
		cache:     make(map[[sha256.Size]byte]time.Time),
	}, nil
}

// Check reports whether password matches hash. An empty hash stands for a
// user that does not exist: it is checked against a dummy hash, so that
// case costs the same time as a wrong password, and it never matches.
func (c *PasswordChecker) Check(hash, password string) bool {
	exists := hash != ""
	if !exists {
		hash = c.dummyHash
	}

	// The cache key is an HMAC under a per-process random key, so the
	// map never holds anything from which the password can be derived
	// offline.
	mac := hmac.New(sha256.New, c.cacheKey)
	mac.Write([]byte(hash))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	var id [sha256.Size]byte
	mac.Sum(id[:0])

	if exists && c.cached(id) {
		return true
	}

	c.slots <- struct{}{}
	ok, err := verifyHash(hash, password)
	<-c.slots
	ok = ok && err == nil && exists
	if ok && c.cacheTTL > 0 {
		c.mu.Lock()
		c.cache[id] = time.Now().Add(c.cacheTTL)
		c.mu.Unlock()
	}
	return ok
}

func (c *PasswordChecker) cached(id [sha256.Size]byte) bool {
	if c.cacheTTL <= 0 {
		return false
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.cache[id]
	if ok && now.After(exp) {
		delete(c.cache, id)
		ok = false
	}
	if len(c.cache) > 10000 {
		for k, e := range c.cache {
			if now.After(e) {
				delete(c.cache, k)
			}
		}
	}
	return ok
}
