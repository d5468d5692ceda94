package store

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenReadOnlyReadsWithoutWriting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bridge.db")
	key, err := LoadOrCreateKey(filepath.Join(dir, "bridge.key"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Authorize(User{Name: "printer", Account: "a@example.com", Provider: "google"},
		Account{Address: "a@example.com", Provider: "google", RefreshToken: "1//refresh"})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	ro, err := OpenReadOnly(path, key)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	defer ro.Close()
	a, err := ro.Account("a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if a.RefreshToken != "1//refresh" {
		t.Errorf("refresh token = %q", a.RefreshToken)
	}
	if err := ro.TouchUser("printer", a.Created); err == nil {
		t.Error("a write through a read-only store succeeded")
	}
}

func TestOpenReadOnlyMissingFile(t *testing.T) {
	_, err := OpenReadOnly(filepath.Join(t.TempDir(), "absent.db"), make([]byte, KeySize))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestLoadKeyDoesNotCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.key")
	if _, err := LoadKey(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadKey created %s", path)
	}
}
