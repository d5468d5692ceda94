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
// OWASP's first recommended set. One login that the cache does not serve
// cost 20 to 27 ms of CPU on a shared 2-vCPU AMD EPYC with Go 1.26
// (BenchmarkCheckPassword, cpu-ms/op), within the 50 ms a login may cost.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonKeyLen    = 32
	argonSaltLen   = 16
)

// Bounds on the parameters of a stored hash, so that a hash not made by
// HashPassword cannot make one login cost seconds of CPU or gigabytes of
// memory: at most about 13 times the cost of the parameters above.
const (
	maxArgonMemoryKiB = 64 * 1024
	maxArgonTime      = 8
	maxArgonThreads   = 8
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
	if h.memory == 0 || h.time == 0 || h.threads == 0 ||
		h.memory > maxArgonMemoryKiB || h.time > maxArgonTime || h.threads > maxArgonThreads {
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
// hashes run at once, so a burst of logins cannot take all memory, and
// concurrent checks of the same username and password share one hash. It
// remembers successful logins for a short time in memory. It is safe for
// concurrent use.
type PasswordChecker struct {
	slots     chan struct{}
	dummyHash string
	cacheKey  []byte
	cacheTTL  time.Duration
	// maxEntries bounds the cache. When it is full, the entry closest to
	// expiry makes room for a new one.
	maxEntries int
	// verify checks a password against a hash. Tests replace it.
	verify func(hash, password string) (bool, error)

	mu       sync.Mutex
	cache    map[checkID]time.Time // expiry of each remembered success
	inflight map[checkID]*pendingCheck
}

// checkID is the HMAC-SHA-256 of a hash and a password under the
// checker's random key.
type checkID [sha256.Size]byte

// pendingCheck is a hash in progress that later checks of the same
// username and password wait for.
type pendingCheck struct {
	done    chan struct{}
	ok      bool
	waiters int
}

// DefaultCacheTTL is how long a successful login is remembered.
const DefaultCacheTTL = 5 * time.Minute

// DefaultCacheEntries bounds the number of remembered logins, far more
// than the users one bridge serves.
const DefaultCacheEntries = 1024

// dummyHash is the hash that a login of a user that does not exist is
// checked against, so it costs what a wrong password costs. HashPassword
// made it from a random password that was thrown away, and a test checks
// that it has HashPassword's parameters. Being a constant, it costs
// no hash, and no 19 MiB of memory, when the server starts.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$3/gogHtyo7Ct14lvaDASRQ$Kvf/K1eDTfp5OYVGwgBO71WXQbPfP6S4mFk8byM4zX0"

// NewPasswordChecker returns a checker that remembers successful logins
// for ttl; 0 turns the cache off.
func NewPasswordChecker(ttl time.Duration) (*PasswordChecker, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating cache key: %w", err)
	}
	return &PasswordChecker{
		// argon2id with one lane keeps a CPU busy, so more hashes at
		// once than CPUs only add memory.
		slots:      make(chan struct{}, runtime.GOMAXPROCS(0)),
		dummyHash:  dummyHash,
		cacheKey:   key,
		cacheTTL:   ttl,
		maxEntries: DefaultCacheEntries,
		verify:     verifyHash,
		cache:      make(map[checkID]time.Time),
		inflight:   make(map[checkID]*pendingCheck),
	}, nil
}

// Check reports whether password matches hash. An empty hash stands for a
// user that does not exist: it is checked against a dummy hash, so that
// case costs the same time as a wrong password, and it never matches.
//
// A success is remembered under a key derived from both hash and
// password, so a changed password or a removed user, whose lookup
// returns another hash, never matches an old entry.
func (c *PasswordChecker) Check(hash, password string) bool {
	exists := hash != ""
	if !exists {
		hash = c.dummyHash
	}
	id := c.id(hash, password)

	c.mu.Lock()
	if exists && c.cachedLocked(id) {
		c.mu.Unlock()
		return true
	}
	if p, ok := c.inflight[id]; ok {
		p.waiters++
		c.mu.Unlock()
		<-p.done
		return p.ok && exists
	}
	p := &pendingCheck{done: make(chan struct{})}
	c.inflight[id] = p
	c.mu.Unlock()

	c.slots <- struct{}{}
	ok, err := c.verify(hash, password)
	<-c.slots
	ok = ok && err == nil && exists

	c.mu.Lock()
	delete(c.inflight, id)
	if ok && c.cacheTTL > 0 {
		c.rememberLocked(id, time.Now())
	}
	c.mu.Unlock()
	p.ok = ok
	close(p.done)
	return ok
}

// id returns the cache key of a hash and a password: an HMAC under a
// random key that never leaves the process's memory. The cache holds no
// password, and its entries cannot be tested against guesses without
// that key.
func (c *PasswordChecker) id(hash, password string) checkID {
	mac := hmac.New(sha256.New, c.cacheKey)
	mac.Write([]byte(hash))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	var id checkID
	mac.Sum(id[:0])
	return id
}

func (c *PasswordChecker) cachedLocked(id checkID) bool {
	if c.cacheTTL <= 0 {
		return false
	}
	exp, ok := c.cache[id]
	if ok && time.Now().After(exp) {
		delete(c.cache, id)
		return false
	}
	return ok
}

// rememberLocked stores a success. A full cache first drops its expired
// entries and then, if still full, the entry closest to expiry.
func (c *PasswordChecker) rememberLocked(id checkID, now time.Time) {
	if _, ok := c.cache[id]; !ok && len(c.cache) >= c.maxEntries {
		for k, exp := range c.cache {
			if now.After(exp) {
				delete(c.cache, k)
			}
		}
		for len(c.cache) >= c.maxEntries {
			var oldest checkID
			var oldestExp time.Time
			for k, exp := range c.cache {
				if oldestExp.IsZero() || exp.Before(oldestExp) {
					oldest, oldestExp = k, exp
				}
			}
			delete(c.cache, oldest)
		}
	}
	c.cache[id] = now.Add(c.cacheTTL)
}
