package admin

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

func TestCallRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		if err := ReadJSON(r, &in); err != nil {
			WriteError(w, http.StatusBadRequest, err)
			return
		}
		WriteJSON(w, http.StatusOK, in)
	})
	mux.HandleFunc("GET /fail", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, errors.New("user x not found"))
	})
	s, err := Listen(path, mux, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %04o, want 0600", info.Mode().Perm())
	}

	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	if err := c.Call(context.Background(), "POST", "/echo", map[string]string{"a": "b"}, &out); err != nil {
		t.Fatal(err)
	}
	if out["a"] != "b" {
		t.Errorf("out = %v", out)
	}

	err = c.Call(context.Background(), "GET", "/fail", nil, nil)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Message != "user x not found" {
		t.Errorf("err = %#v", err)
	}

	if _, err := Listen(path, mux, slog.Default()); err == nil {
		t.Error("second Listen on a live socket succeeded")
	}
}

func TestDialNotRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	if _, err := Dial(path); !errors.Is(err, ErrNotRunning) {
		t.Errorf("err = %v, want ErrNotRunning", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	s, err := Listen(path, http.NewServeMux(), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	// Close the listener but leave the file, as a killed server does.
	s.ln.(*net.UnixListener).SetUnlinkOnClose(false)
	s.ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("socket file gone: %v", err)
	}
	s2, err := Listen(path, http.NewServeMux(), slog.Default())
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	s2.Close()
}
