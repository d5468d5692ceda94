package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	bolt "go.etcd.io/bbolt"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakeoauth"
	"github.com/bridgemail/bridge/store"
)

// checkStoreIntact opens the store that a killed process left and fails
// on any sign of a half-written change. The database must open and pass
// bbolt's page check, every user must have its account, and every
// account's refresh token must open and be one the provider issued. It
// returns the users.
func checkStoreIntact(t *testing.T, env *bridgetest.Env) []store.User {
	t.Helper()
	db, err := bolt.Open(env.Config.Store.Path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("opening the database after the kill: %v", err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	db.Close()
	if err != nil {
		t.Fatalf("database pages after the kill: %v", err)
	}

	key, err := store.LoadKey(env.Config.Store.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(env.Config.Store.Path, key)
	if err != nil {
		t.Fatalf("opening the store after the kill: %v", err)
	}
	defer st.Close()

	issued := env.OAuth.RefreshTokens()
	users, err := st.Users()
	if err != nil {
		t.Fatalf("reading users: %v", err)
	}
	for _, u := range users {
		a, err := st.Account(u.Account)
		if err != nil {
			t.Errorf("user %s: account %s: %v", u.Name, u.Account, err)
			continue
		}
		if !slices.Contains(issued, a.RefreshToken) {
			t.Errorf("account %s holds a refresh token the provider never issued", a.Address)
		}
		if u.PasswordHash == "" {
			t.Errorf("user %s has no password hash", u.Name)
		}
	}
	accounts, err := st.Accounts()
	if err != nil {
		t.Fatalf("reading accounts: %v", err)
	}
	for _, a := range accounts {
		if _, err := st.Account(a.Address); err != nil {
			t.Errorf("account %s: %v", a.Address, err)
		}
	}
	return users
}

// sendLoop sends messages to addr until stop closes, ignoring failures,
// because the server is killed under it.
func sendLoop(addr string, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := smtp.Dial(addr)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if c.Auth(sasl.NewPlainClient("", svcUser, svcPassword)) == nil {
			c.SendMail(svcAccount, []string{"a@example.org"}, strings.NewReader(svcMessage))
		}
		c.Close()
	}
}

// TestKillDuringTokenRotation sends SIGKILL to bridge serve while it
// refreshes and saves rotated refresh tokens as fast as it can. The
// access tokens live one second and no upstream connection is reused, so
// every message refreshes, and the Microsoft flavour rotates the refresh
// token on each refresh.
func TestKillDuringTokenRotation(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{
		Flavor:              fakeoauth.Microsoft,
		AccessTokenLifetime: time.Second,
		ExtraYAML:           "pool:\n  max_idle: -1\n",
	})
	seedStore(t, env)

	const rounds = 4
	for round := range rounds {
		p := startBridge(t, env)
		addr := p.addrs()[0]
		start := env.OAuth.RefreshRequests()

		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sendLoop(addr, stop)
			}()
		}
		deadline := time.Now().Add(30 * time.Second)
		for env.OAuth.RefreshRequests() < start+5 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if env.OAuth.RefreshRequests() < start+5 {
			t.Fatalf("round %d: %d refreshes in 30s, want 5", round, env.OAuth.RefreshRequests()-start)
		}
		time.Sleep(time.Duration(rand.IntN(30000)) * time.Microsecond)
		p.signal(syscall.SIGKILL)
		p.wait()
		close(stop)
		wg.Wait()

		users := checkStoreIntact(t, env)
		if len(users) != 1 {
			t.Fatalf("round %d: %d users after the kill, want 1", round, len(users))
		}
		t.Logf("round %d: killed after %d refreshes; the stored refresh token is current: %v",
			round, env.OAuth.RefreshRequests()-start, storedTokenValid(t, env))

		// A kill after the provider rotated the token and before the
		// commit loses the new token. The store is whole, but this fake
		// revokes a replaced token at once, so the consent must be given
		// again. Seed a new consent so the next round can refresh.
		seedStore(t, env)
	}
}

// storedTokenValid reports whether the test account's stored refresh token
// still works at the provider.
func storedTokenValid(t *testing.T, env *bridgetest.Env) bool {
	t.Helper()
	key, err := store.LoadKey(env.Config.Store.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(env.Config.Store.Path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := st.Account(svcAccount)
	if err != nil {
		t.Fatal(err)
	}
	return env.OAuth.RefreshTokenValid(a.RefreshToken)
}

// TestKillDuringAuthorize sends SIGKILL to bridge authorize at random
// moments around the end of the consent, when it exchanges the code and
// writes the user and its account. Each user is then either whole or
// absent.
func TestKillDuringAuthorize(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	seedStore(t, env)

	present, absent := 0, 0
	const runs = 10
	for i := range runs {
		user := fmt.Sprintf("copier%d", i)
		account := fmt.Sprintf("copier%d@example.com", i)
		cmd := exec.Command(bridgeBinary, "authorize", "--config", env.ConfigPath, "--account", account, user)
		cmd.Env = bridgeEnv()
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		consent := waitConsentURL(t, stdout, env)
		go io.Copy(io.Discard, stdout)

		browsed := make(chan struct{})
		go func() {
			defer close(browsed)
			if resp, err := http.Get(consent); err == nil {
				resp.Body.Close()
			}
		}()
		time.Sleep(time.Duration(rand.IntN(40000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		<-browsed
		if strings.Contains(stderr.String(), "DATA RACE") {
			t.Errorf("bridge authorize reported a data race:\n%s", stderr.String())
		}

		users := checkStoreIntact(t, env)
		if slices.ContainsFunc(users, func(u store.User) bool { return u.Name == user }) {
			present++
		} else {
			absent++
		}
		if !slices.ContainsFunc(users, func(u store.User) bool { return u.Name == svcUser }) {
			t.Fatalf("run %d: the user stored before the kill is gone", i)
		}
	}
	t.Logf("after %d kills: %d users written whole, %d not written", runs, present, absent)
}

// waitConsentURL reads the output of bridge authorize until the consent
// URL, printed alone on its line.
func waitConsentURL(t *testing.T, stdout io.Reader, env *bridgetest.Env) string {
	t.Helper()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), env.OAuth.AuthURL()+"?") {
				lines <- sc.Text()
				return
			}
		}
	}()
	select {
	case u, ok := <-lines:
		if !ok {
			t.Fatal("bridge authorize ended without printing a consent URL")
		}
		return u
	case <-time.After(30 * time.Second):
		t.Fatal("no consent URL within 30s")
		return ""
	}
}

// TestServeRejectsReadableKeyFile checks that bridge serve does not start
// with a key file that group or others can read, and names the fix.
func TestServeRejectsReadableKeyFile(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		t.Run(fmt.Sprintf("%04o", mode), func(t *testing.T) {
			env := bridgetest.New(t, bridgetest.Options{})
			seedStore(t, env)
			if err := os.Chmod(env.Config.Store.KeyFile, mode); err != nil {
				t.Fatal(err)
			}
			_, stderr, code := runBridge(t, env.Dir, "serve", "--config", env.ConfigPath)
			if code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			if want := "chmod 600 " + env.Config.Store.KeyFile; !strings.Contains(stderr, want) {
				t.Errorf("error does not say %q:\n%s", want, stderr)
			}
			if strings.Contains(stderr, "bridge started") {
				t.Errorf("the bridge started:\n%s", stderr)
			}

			// The same through run, as the error value.
			err := run(t.Context(), []string{"serve", "--config", env.ConfigPath}, strings.NewReader(""), io.Discard, io.Discard)
			if !errors.Is(err, store.ErrKeyPermissions) {
				t.Errorf("run: %v, want ErrKeyPermissions", err)
			}
		})
	}
}

// TestServeCreatesPrivateFiles checks the modes of the database and the
// key file that a first start creates, under a umask that would leave
// them readable.
func TestServeCreatesPrivateFiles(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	old := syscall.Umask(0o002)
	p := startBridge(t, env)
	syscall.Umask(old)
	p.signal(syscall.SIGTERM)
	if err := p.wait(); err != nil {
		t.Fatalf("bridge serve: %v", err)
	}
	for _, path := range []string{env.Config.Store.Path, env.Config.Store.KeyFile} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if mode := info.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", path, mode)
		}
	}
}
