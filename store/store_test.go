package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTest(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	key, err := LoadOrCreateKey(filepath.Join(dir, "bridge.key"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bridge.db")
	s, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestKeyCreatedWithMode0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	key, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != KeySize {
		t.Fatalf("key length = %d", len(key))
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("mode = %04o, want 0600", info.Mode().Perm())
	}
	again, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, again) {
		t.Error("second load returned a different key")
	}
}

func TestKeyReadableByOthersRejected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	if _, err := LoadOrCreateKey(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadOrCreateKey(path)
	if !errors.Is(err, ErrKeyPermissions) {
		t.Fatalf("err = %v, want ErrKeyPermissions", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte("chmod 600 "+path)) {
		t.Errorf("error does not name the fix: %v", err)
	}
}

func TestKeyWrongLengthRejected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestDatabaseMode0600(t *testing.T) {
	s, _ := openTest(t)
	info, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("mode = %04o, want 0600", info.Mode().Perm())
	}
}

func TestAuthorizeAndRead(t *testing.T) {
	s, _ := openTest(t)
	u := User{Name: "printer", PasswordHash: "h", Account: "a@example.com", Provider: "google"}
	a := Account{Address: "a@example.com", Provider: "google", RefreshToken: "1//refresh", Scopes: []string{"https://mail.google.com/"}}
	if err := s.Authorize(u, a); err != nil {
		t.Fatal(err)
	}

	gotU, err := s.User("printer")
	if err != nil {
		t.Fatal(err)
	}
	if gotU.Account != "a@example.com" || gotU.Created.IsZero() {
		t.Errorf("user = %+v", gotU)
	}
	gotA, err := s.Account("a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if gotA.RefreshToken != "1//refresh" {
		t.Errorf("refresh token = %q", gotA.RefreshToken)
	}
	if _, err := s.User("nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing user err = %v", err)
	}
}

func TestRefreshTokenSealedOnDisk(t *testing.T) {
	s, dir := openTest(t)
	const token = "1//plaintext-refresh-token-marker"
	err := s.Authorize(User{Name: "u", Account: "a@example.com"}, Account{Address: "a@example.com", RefreshToken: token})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetRefreshToken("a@example.com", token+"-2"); err != nil {
		t.Fatal(err)
	}
	s.Close()

	data, err := os.ReadFile(filepath.Join(dir, "bridge.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("plaintext-refresh-token-marker")) {
		t.Fatal("database file contains the refresh token in plaintext")
	}

	// The same database under another key yields no token.
	otherKey := bytes.Repeat([]byte{7}, KeySize)
	other, err := Open(filepath.Join(dir, "bridge.db"), otherKey)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Account("a@example.com"); err == nil {
		t.Fatal("account opened under the wrong key")
	}
}

func TestSealedTokenBoundToAccount(t *testing.T) {
	s, _ := openTest(t)
	for _, addr := range []string{"a@example.com", "b@example.com"} {
		if err := s.Authorize(User{Name: addr, Account: addr}, Account{Address: addr, RefreshToken: "t-" + addr}); err != nil {
			t.Fatal(err)
		}
	}
	// Move a's sealed token into b's record.
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(accountsBucket)
		var ra, rb accountRecord
		if err := getJSON(b, "a@example.com", &ra); err != nil {
			return err
		}
		if err := getJSON(b, "b@example.com", &rb); err != nil {
			return err
		}
		rb.SealedToken = ra.SealedToken
		return putJSON(b, "b@example.com", rb)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Account("b@example.com"); err == nil {
		t.Fatal("token sealed for a@ opened as b@")
	}
}

func TestDeleteLastUserRemovesAccount(t *testing.T) {
	s, _ := openTest(t)
	a := Account{Address: "shared@example.com", RefreshToken: "r"}
	for _, name := range []string{"scanner", "cron"} {
		if err := s.Authorize(User{Name: name, Account: a.Address}, a); err != nil {
			t.Fatal(err)
		}
	}

	removed, err := s.DeleteUser("scanner")
	if err != nil {
		t.Fatal(err)
	}
	if removed {
		t.Error("account removed while cron still uses it")
	}
	if _, err := s.Account(a.Address); err != nil {
		t.Errorf("account gone after first delete: %v", err)
	}

	removed, err = s.DeleteUser("cron")
	if err != nil {
		t.Fatal(err)
	}
	if !removed {
		t.Error("account kept after its last user went")
	}
	if _, err := s.Account(a.Address); !errors.Is(err, ErrNotFound) {
		t.Errorf("account err = %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteUser("cron"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete err = %v", err)
	}
}

func TestAuthorizeMoveRemovesOldAccount(t *testing.T) {
	s, _ := openTest(t)
	old := Account{Address: "old@example.com", RefreshToken: "r-old"}
	if err := s.Authorize(User{Name: "scanner", Account: old.Address}, old); err != nil {
		t.Fatal(err)
	}
	if err := s.Authorize(User{Name: "cron", Account: old.Address}, old); err != nil {
		t.Fatal(err)
	}

	moved := Account{Address: "new@example.com", RefreshToken: "r-new"}
	if err := s.Authorize(User{Name: "scanner", Account: moved.Address}, moved); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Account(old.Address); err != nil {
		t.Errorf("old account gone while cron still sends as it: %v", err)
	}

	if err := s.PutUser(User{Name: "cron", Account: moved.Address}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Account(old.Address); !errors.Is(err, ErrNotFound) {
		t.Errorf("old account err = %v after its last user moved, want ErrNotFound", err)
	}
	if a, err := s.Account(moved.Address); err != nil || a.RefreshToken != "r-new" {
		t.Errorf("new account = %+v, %v", a, err)
	}
}

func TestSecondOpenFailsLocked(t *testing.T) {
	_, dir := openTest(t)
	key, _ := LoadOrCreateKey(filepath.Join(dir, "bridge.key"))
	start := time.Now()
	_, err := Open(filepath.Join(dir, "bridge.db"), key)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Error("second open waited far longer than the lock timeout")
	}
}

func TestTouchUserConcurrent(t *testing.T) {
	s, _ := openTest(t)
	if err := s.Authorize(User{Name: "u", Account: "a@x"}, Account{Address: "a@x", RefreshToken: "r"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.TouchUser("u", time.Now()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	u, err := s.User("u")
	if err != nil {
		t.Fatal(err)
	}
	if u.LastUsed.IsZero() {
		t.Error("last used not recorded")
	}
	if err := s.TouchUser("gone", time.Now()); err != nil {
		t.Errorf("touching a removed user: %v", err)
	}
}

func TestPutUserNeedsAccount(t *testing.T) {
	s, _ := openTest(t)
	err := s.PutUser(User{Name: "u", Account: "none@x"})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestOpenCreatesMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "nested")
	key, err := LoadOrCreateKey(filepath.Join(dir, "bridge.key"))
	if err != nil {
		t.Fatalf("key in a missing directory: %v", err)
	}
	s, err := Open(filepath.Join(dir, "bridge.db"), key)
	if err != nil {
		t.Fatalf("database in a missing directory: %v", err)
	}
	s.Close()
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Errorf("directory mode = %04o, want 0700", info.Mode().Perm())
	}
}
