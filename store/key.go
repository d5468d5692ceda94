package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the length in bytes of the AES-256 key that seals refresh
// tokens.
const KeySize = 32

// ErrKeyPermissions is returned when the key file is readable by group or
// others.
var ErrKeyPermissions = errors.New("key file is readable by group or others")

// LoadOrCreateKey reads the sealing key at path, or creates the file with
// a new random key and mode 0600 when it does not exist. A key file that
// group or others can read is rejected with an error that names the fix.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(path)
	}
	return key, err
}

func readKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// A systemd credential file is mode 0400 and owned by the service, so
	// only the bits for group and others matter.
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run chmod 600 %s", ErrKeyPermissions, path, info.Mode().Perm(), path)
	}

	key := make([]byte, KeySize+1)
	n, _ := f.Read(key)
	if n != KeySize {
		return nil, fmt.Errorf("invalid key file %s: %d bytes, expected %d", path, n, KeySize)
	}
	return key[:KeySize], nil
}

func createKey(path string) ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}

	// The directory holds the database too, so only the owner may enter.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating key file directory: %w", err)
	}

	// O_EXCL makes a concurrent creator lose instead of overwriting a key
	// that may already seal tokens.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("creating key file: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("writing key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("writing key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing key file: %w", err)
	}
	return key, nil
}

// sealer encrypts refresh tokens with AES-256-GCM. The account address is
// the additional data, so a sealed token moved to another account does not
// open.
type sealer struct {
	aead cipher.AEAD
}

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(plaintext, address string) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("generating nonce: %w", err)
	}
	return s.aead.Seal(nonce, nonce, []byte(plaintext), []byte(address)), nil
}

func (s *sealer) open(sealed []byte, address string) (string, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return "", errors.New("sealed token is too short")
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(address))
	if err != nil {
		return "", fmt.Errorf("opening sealed token of %s: wrong key file or corrupt database: %w", address, err)
	}
	return string(plain), nil
}
