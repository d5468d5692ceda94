// Package store keeps local users and OAuth accounts in a bbolt database.
//
// Refresh tokens are sealed with AES-256-GCM under a key kept outside the
// database, so a copy of the database alone yields no token. Every change
// is one bbolt transaction, so a crash leaves either the old or the new
// record, never half of one.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	// ErrNotFound is returned for a user or account that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrLocked is returned by Open when another process has the
	// database open.
	ErrLocked = errors.New("database is open in another process")
)

var (
	usersBucket    = []byte("users")
	accountsBucket = []byte("accounts")
)

// lockTimeout is how long Open waits for another process to release the
// database file.
const lockTimeout = time.Second

// User is a local SMTP credential and the account it sends as.
type User struct {
	Name string `json:"name"`
	// PasswordHash is an argon2id hash in PHC string format.
	PasswordHash string `json:"password_hash"`
	Account      string `json:"account"`
	Provider     string `json:"provider"`
	// AllowedSenders lists the envelope senders the user may use; empty
	// allows any, leaving the check to the provider.
	AllowedSenders []string  `json:"allowed_senders,omitempty"`
	Created        time.Time `json:"created"`
	Updated        time.Time `json:"updated"`
	LastUsed       time.Time `json:"last_used,omitzero"`
}

// Account is an OAuth account at a provider and its refresh token.
type Account struct {
	Address  string `json:"address"`
	Provider string `json:"provider"`
	// RefreshToken is the plaintext token; only its sealed form is stored.
	RefreshToken string    `json:"-"`
	Scopes       []string  `json:"scopes"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
}

// accountRecord is an Account as stored.
type accountRecord struct {
	Account
	SealedToken []byte `json:"sealed_token"`
}

// Store is an open database. It is safe for concurrent use.
type Store struct {
	db     *bolt.DB
	sealer *sealer
}

// Open opens or creates the database at path with mode 0600. key is the
// 32-byte sealing key from LoadOrCreateKey. Open returns an error wrapping
// ErrLocked when another process holds the file.
func Open(path string, key []byte) (*Store, error) {
	s, err := newSealer(key)
	if err != nil {
		return nil, fmt.Errorf("sealing key: %w", err)
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating database directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("opening %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	// bbolt applies the mode only when it creates the file.
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("setting mode of %s: %w", path, err)
	}

	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{usersBucket, accountsBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initializing %s: %w", path, err)
	}
	return &Store{db: db, sealer: s}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path returns the database file's path.
func (s *Store) Path() string { return s.db.Path() }

// User returns the user called name, or an error wrapping ErrNotFound.
func (s *Store) User(name string) (User, error) {
	var u User
	err := s.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(usersBucket), name, &u)
	})
	if err != nil {
		return User{}, fmt.Errorf("user %s: %w", name, err)
	}
	return u, nil
}

// Users returns every user, sorted by name.
func (s *Store) Users() ([]User, error) {
	var users []User
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(usersBucket).ForEach(func(k, v []byte) error {
			var u User
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("user %s: %w", k, err)
			}
			users = append(users, u)
			return nil
		})
	})
	sort.Slice(users, func(i, j int) bool { return users[i].Name < users[j].Name })
	return users, err
}

// Account returns the account with the refresh token opened, or an error
// wrapping ErrNotFound.
func (s *Store) Account(address string) (Account, error) {
	var rec accountRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(accountsBucket), address, &rec)
	})
	if err != nil {
		return Account{}, fmt.Errorf("account %s: %w", address, err)
	}
	token, err := s.sealer.open(rec.SealedToken, address)
	if err != nil {
		return Account{}, err
	}
	rec.Account.RefreshToken = token
	return rec.Account, nil
}

// Accounts returns every account without its refresh token, sorted by
// address.
func (s *Store) Accounts() ([]Account, error) {
	var accounts []Account
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(accountsBucket).ForEach(func(k, v []byte) error {
			var rec accountRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("account %s: %w", k, err)
			}
			accounts = append(accounts, rec.Account)
			return nil
		})
	})
	sort.Slice(accounts, func(i, j int) bool { return accounts[i].Address < accounts[j].Address })
	return accounts, err
}

// Authorize stores the user and its account, with the account's refresh
// token, in one transaction. An existing user keeps its creation time and
// an existing account gets the new token. When the user moves to another
// account, the account it sent as before is removed if no other user
// sends as it.
func (s *Store) Authorize(u User, a Account) error {
	now := time.Now().UTC()
	sealed, err := s.sealer.seal(a.RefreshToken, a.Address)
	if err != nil {
		return err
	}

	return s.db.Update(func(tx *bolt.Tx) error {
		accounts := tx.Bucket(accountsBucket)
		var old accountRecord
		if err := getJSON(accounts, a.Address, &old); err == nil {
			a.Created = old.Created
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		if a.Created.IsZero() {
			a.Created = now
		}
		a.Updated = now
		if err := putJSON(accounts, a.Address, accountRecord{Account: a, SealedToken: sealed}); err != nil {
			return err
		}
		return putUser(tx, u, now)
	})
}

// PutUser creates or replaces a user whose account already exists. Like
// Authorize, it removes the user's previous account when no other user
// sends as it.
func (s *Store) PutUser(u User) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(accountsBucket).Get([]byte(u.Account)) == nil {
			return fmt.Errorf("account %s: %w", u.Account, ErrNotFound)
		}
		return putUser(tx, u, time.Now().UTC())
	})
}

func putUser(tx *bolt.Tx, u User, now time.Time) error {
	users := tx.Bucket(usersBucket)
	var old User
	if err := getJSON(users, u.Name, &old); err == nil {
		u.Created = old.Created
		if u.LastUsed.IsZero() {
			u.LastUsed = old.LastUsed
		}
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	if u.Created.IsZero() {
		u.Created = now
	}
	u.Updated = now
	if err := putJSON(users, u.Name, u); err != nil {
		return err
	}

	if old.Account == "" || old.Account == u.Account {
		return nil
	}
	inUse, err := accountInUse(users, old.Account)
	if err != nil || inUse {
		return err
	}
	return tx.Bucket(accountsBucket).Delete([]byte(old.Account))
}

// accountInUse reports whether any user sends as the account.
func accountInUse(users *bolt.Bucket, address string) (bool, error) {
	inUse := false
	err := users.ForEach(func(k, v []byte) error {
		var u User
		if err := json.Unmarshal(v, &u); err != nil {
			return fmt.Errorf("user %s: %w", k, err)
		}
		if u.Account == address {
			inUse = true
		}
		return nil
	})
	return inUse, err
}

// SetRefreshToken replaces the account's refresh token in one
// transaction. Providers that rotate refresh tokens invalidate the old
// one, so the new one must be saved before it is used.
func (s *Store) SetRefreshToken(address, token string) error {
	sealed, err := s.sealer.seal(token, address)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		accounts := tx.Bucket(accountsBucket)
		var rec accountRecord
		if err := getJSON(accounts, address, &rec); err != nil {
			return fmt.Errorf("account %s: %w", address, err)
		}
		rec.SealedToken = sealed
		rec.Updated = time.Now().UTC()
		return putJSON(accounts, address, rec)
	})
}

// DeleteUser removes the user, and its account when no other user sends
// as that account. It reports whether the account was removed.
func (s *Store) DeleteUser(name string) (accountRemoved bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		users := tx.Bucket(usersBucket)
		var u User
		if err := getJSON(users, name, &u); err != nil {
			return fmt.Errorf("user %s: %w", name, err)
		}
		if err := users.Delete([]byte(name)); err != nil {
			return err
		}

		shared, err := accountInUse(users, u.Account)
		if err != nil || shared {
			return err
		}
		accountRemoved = true
		return tx.Bucket(accountsBucket).Delete([]byte(u.Account))
	})
	return accountRemoved, err
}

// TouchUser records that the user authenticated at t. Concurrent calls
// are batched into one transaction.
func (s *Store) TouchUser(name string, t time.Time) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		users := tx.Bucket(usersBucket)
		var u User
		if err := getJSON(users, name, &u); err != nil {
			// The user was removed since it authenticated.
			return nil
		}
		u.LastUsed = t.UTC()
		return putJSON(users, name, u)
	})
}

func getJSON(b *bolt.Bucket, key string, v any) error {
	data := b.Get([]byte(key))
	if data == nil {
		return ErrNotFound
	}
	// json.Unmarshal copies what it keeps, so data may point into the
	// memory map.
	return json.Unmarshal(data, v)
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}
