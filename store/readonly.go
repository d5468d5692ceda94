package store

import (
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// LoadKey reads the sealing key at path, like LoadOrCreateKey, but never
// creates it. A missing file is an error wrapping fs.ErrNotExist.
func LoadKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if err != nil {
		return nil, fmt.Errorf("sealing key: %w", err)
	}
	return key, nil
}

// OpenReadOnly opens an existing database for reading, as bridge check
// does, without creating or changing anything. Writes through the
// returned Store fail. A missing file is an error wrapping fs.ErrNotExist,
// and a file that another process holds open for writing is an error
// wrapping ErrLocked.
func OpenReadOnly(path string, key []byte) (*Store, error) {
	s, err := newSealer(key)
	if err != nil {
		return nil, fmt.Errorf("sealing key: %w", err)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}

	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, ReadOnly: true})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("opening %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{usersBucket, accountsBucket} {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("bucket %q is missing, so this is not a bridge database", b)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return &Store{db: db, sealer: s}, nil
}
