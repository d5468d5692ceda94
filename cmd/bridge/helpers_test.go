package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/admin"
	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/store"
)

// output is a command's standard output or error. Tests read it while
// the command writes, line by line or whole.
type output struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	part  string
	lines chan string
}

func newOutput() *output { return &output{lines: make(chan string, 1000)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	o.part += string(p)
	for {
		line, rest, ok := strings.Cut(o.part, "\n")
		if !ok {
			break
		}
		o.part = rest
		select {
		case o.lines <- line:
		default:
		}
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitLine returns the first unread line for which match is true.
func (o *output) waitLine(t *testing.T, what string, match func(string) bool) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line := <-o.lines:
			if match(line) {
				return line
			}
		case <-timeout:
			t.Fatalf("no %s in the output:\n%s", what, o.String())
			return ""
		}
	}
}

// cliRun is a bridge command line running in this process.
type cliRun struct {
	stdout, stderr *output
	stdin          *io.PipeWriter
	done           chan error
	cancel         context.CancelFunc
}

// start runs bridge with args in a goroutine. Its standard input is a
// pipe that the test writes to and that closes when the test ends.
func start(t *testing.T, args ...string) *cliRun {
	t.Helper()
	stdinR, stdinW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	c := &cliRun{stdout: newOutput(), stderr: newOutput(), stdin: stdinW, done: make(chan error, 1), cancel: cancel}
	go func() {
		c.done <- run(ctx, args, stdinR, c.stdout, c.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		stdinW.Close()
	})
	return c
}

// wait returns the command's error after it ends.
func (c *cliRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("command did not end; output:\n%s\nstderr:\n%s", c.stdout.String(), c.stderr.String())
		return nil
	}
}

// runCommand runs bridge with args and the given standard input to its
// end.
func runCommand(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &stdout, &stderr)
	if stderr.Len() > 0 {
		t.Logf("stderr of %v:\n%s", args, stderr.String())
	}
	return stdout.String(), err
}

// consentURL waits for the consent URL, printed alone on its line.
func (c *cliRun) consentURL(t *testing.T, env *bridgetest.Env) string {
	t.Helper()
	return c.stdout.waitLine(t, "consent URL", func(line string) bool {
		return strings.HasPrefix(line, env.OAuth.AuthURL()+"?")
	})
}

// browse opens u as a browser would, following the redirect to the
// loopback listener, and returns the page's status and body.
func browse(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// redirectTarget opens u without following the redirect and returns the
// address that the browser would be sent to.
func redirectTarget(t *testing.T, u string) string {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := client.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("consent URL returned %s, expected 302", resp.Status)
	}
	return resp.Header.Get("Location")
}

// authorize runs bridge authorize with args and follows the consent URL
// in a browser. It returns the output and the command's error.
func authorize(t *testing.T, env *bridgetest.Env, args ...string) (string, error) {
	t.Helper()
	c := start(t, append([]string{"authorize", "--config", env.ConfigPath}, args...)...)
	browse(t, c.consentURL(t, env))
	err := c.wait(t)
	return c.stdout.String(), err
}

var passwordLine = regexp.MustCompile(`(?m)^    ([A-Za-z0-9]{20})$`)

// printedPassword returns the generated password in out.
func printedPassword(t *testing.T, out string) string {
	t.Helper()
	m := passwordLine.FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		t.Fatalf("found %d generated passwords in the output, expected 1:\n%s", len(m), out)
	}
	return m[0][1]
}

// server is bridge serve running in this process.
type server struct {
	addr string
	logs *output
	stop func()
}

// serve runs bridge serve on env's configuration until the test ends, and
// returns once its admin socket accepts connections.
func serve(t *testing.T, env *bridgetest.Env) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{logs: newOutput()}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", env.ConfigPath}, strings.NewReader(""), io.Discard, s.logs)
	}()
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("serve log:\n%s", s.logs.String())
		}
	})

	line := s.logs.waitLine(t, "listening line", func(l string) bool { return strings.Contains(l, "msg=listening") })
	m := regexp.MustCompile(`address=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no address in %q", line)
	}
	s.addr = m[1]
	s.logs.waitLine(t, "start line", func(l string) bool { return strings.Contains(l, "bridge started") })
	if _, err := admin.Dial(env.Config.Store.AdminSocket); err != nil {
		t.Fatalf("admin socket after start: %v", err)
	}
	return s
}

// send logs in to the bridge at addr and sends one message from the
// account to a recipient. It returns the error of the first failed step.
func send(t *testing.T, addr, user, password, from string) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("dialing the bridge: %v", err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		return err
	}
	msg := "From: " + from + "\r\nTo: rcpt@example.net\r\nSubject: test\r\n\r\nhello\r\n"
	if err := c.SendMail(from, []string{"rcpt@example.net"}, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// smtpCode returns the reply code of an SMTP error, or 0.
func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// readStore opens env's store, runs fn and closes it again, so that a
// server can open it afterwards.
func readStore(t *testing.T, env *bridgetest.Env, fn func(st *store.Store)) {
	t.Helper()
	key, err := store.LoadOrCreateKey(env.Config.Store.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(env.Config.Store.Path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fn(st)
}

// storeIsEmpty fails the test if env's store holds a user or an account.
// A store that does not exist counts as empty.
func storeIsEmpty(t *testing.T, env *bridgetest.Env) {
	t.Helper()
	if _, err := os.Stat(env.Config.Store.Path); errors.Is(err, os.ErrNotExist) {
		return
	}
	readStore(t, env, func(st *store.Store) {
		users, err := st.Users()
		if err != nil {
			t.Fatal(err)
		}
		if len(users) != 0 {
			t.Errorf("store has users %+v, expected none", users)
		}
		accounts, err := st.Accounts()
		if err != nil {
			t.Fatal(err)
		}
		if len(accounts) != 0 {
			t.Errorf("store has accounts %+v, expected none", accounts)
		}
	})
}

// passwordMatches reports whether password matches the stored hash of
// user.
func passwordMatches(t *testing.T, st *store.Store, user, password string) bool {
	t.Helper()
	u, err := st.User(user)
	if err != nil {
		t.Fatal(err)
	}
	checker, err := auth.NewPasswordChecker(0)
	if err != nil {
		t.Fatal(err)
	}
	return checker.Check(u.PasswordHash, password)
}
