package main

// The tests in the service_*_test.go and check_test.go files run the bridge
// binary that TestMain builds, as systemd or an administrator would run
// it, and send it real signals.

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/store"
)

// testVersion is set in the binary with -ldflags, as a release build does.
const testVersion = "v0.0.0-servicetest"

var (
	bridgeBinary string
	update       = flag.Bool("update", false, "rewrite the golden files in testdata")
)

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "bridge-binary-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bridgeBinary = filepath.Join(dir, "bridge")
	args := []string{"build", "-o", bridgeBinary, "-ldflags", "-X main.version=" + testVersion}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the bridge binary:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	svcUser     = "printer"
	svcPassword = "correct horse battery"
	svcAccount  = "scanner@example.com"
	svcMessage  = "From: Scanner <scanner@example.com>\r\nTo: a@example.org\r\n" +
		"Subject: Scan\r\nMessage-ID: <scan-0042@printer.example>\r\n\r\nPage one.\r\n"
)

// seedStore stores the test user in env's store and closes the store
// again, so that a bridge process can open it. It returns the refresh
// token.
func seedStore(t *testing.T, env *bridgetest.Env) string {
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
	return env.Seed(t, st, svcUser, svcPassword, svcAccount)
}

// logLines collects the lines a process writes, for tests to wait on.
type logLines struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func newLogLines(r io.Reader) *logLines {
	l := &logLines{changed: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// waitFor waits until a line from the first skip lines on contains want,
// and returns its index.
func (l *logLines) waitFor(t *testing.T, skip int, want string) int {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		l.mu.Lock()
		for i := skip; i < len(l.lines); i++ {
			if strings.Contains(l.lines[i], want) {
				l.mu.Unlock()
				return i
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no log line contains %q; log:\n%s", want, l.String())
		}
	}
}

func (l *logLines) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// bridgeProcess is a running bridge serve.
type bridgeProcess struct {
	t      *testing.T
	env    *bridgetest.Env
	cmd    *exec.Cmd
	logs   *logLines
	exited chan struct{}
	err    error
}

// startBridge runs bridge serve on env's configuration, with extraEnv
// added to its environment, and returns once it has started. The process
// is killed when the test ends, if it still runs.
func startBridge(t *testing.T, env *bridgetest.Env, extraEnv ...string) *bridgeProcess {
	t.Helper()
	p := startBridgeNoWait(t, env, extraEnv...)
	p.logs.waitFor(t, 0, "bridge started")
	return p
}

func startBridgeNoWait(t *testing.T, env *bridgetest.Env, extraEnv ...string) *bridgeProcess {
	t.Helper()
	cmd := exec.Command(bridgeBinary, "serve", "--config", env.ConfigPath)
	cmd.Env = append(bridgeEnv(), extraEnv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &bridgeProcess{t: t, env: env, cmd: cmd, logs: newLogLines(stderr), exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
		if strings.Contains(p.logs.String(), "DATA RACE") {
			t.Errorf("the bridge process reported a data race:\n%s", p.logs)
		} else if t.Failed() {
			t.Logf("bridge log:\n%s", p.logs)
		}
	})
	return p
}

func (p *bridgeProcess) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("sending %v: %v", sig, err)
	}
}

// wait returns the process's exit error once it has exited.
func (p *bridgeProcess) wait() error {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(60 * time.Second):
		p.t.Fatal("bridge did not exit")
		return nil
	}
}

// reload sends SIGHUP and waits for the log line that ends the reload.
func (p *bridgeProcess) reload(want string) {
	p.t.Helper()
	skip := p.logs.count()
	p.signal(syscall.SIGHUP)
	p.logs.waitFor(p.t, skip, want)
}

// runBridge runs a bridge command to its end and returns its standard
// output, standard error and exit code.
func runBridge(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bridgeBinary, args...)
	cmd.Dir = dir
	cmd.Env = bridgeEnv()
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running bridge %v: %v", args, err)
	}
	if strings.Contains(errOut.String(), "DATA RACE") {
		t.Errorf("bridge %v reported a data race:\n%s", args, errOut.String())
	}
	return out.String(), errOut.String(), code
}

// bridgeEnv returns the environment of a bridge process: the test's,
// without the NOTIFY_SOCKET and WATCHDOG_ variables of a service manager
// that runs the test, and without the second that a binary built with
// -race sleeps before it exits.
func bridgeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "WATCHDOG_") {
			env = append(env, kv)
		}
	}
	return append(env, "GORACE=atexit_sleep_ms=0")
}

// status returns the running server's status through bridge status. It
// names the admin socket, because the configuration file may be broken.
func (p *bridgeProcess) status() statusReply {
	p.t.Helper()
	out, errOut, code := runBridge(p.t, "", "status", "--json", "--socket", p.env.Config.Store.AdminSocket)
	if code != 0 {
		p.t.Fatalf("bridge status exited %d: %s", code, errOut)
	}
	var st statusReply
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		p.t.Fatalf("decoding bridge status --json: %v\n%s", err, out)
	}
	return st
}

// addrs returns the bound address of each listener.
func (p *bridgeProcess) addrs() []string {
	p.t.Helper()
	var addrs []string
	for _, l := range p.status().Listeners {
		addrs = append(addrs, l.Address)
	}
	return addrs
}

// rewriteConfig replaces the listeners of env's configuration file with
// listeners (YAML lines under "listeners:"), and appends extra.
func rewriteConfig(t *testing.T, env *bridgetest.Env, listeners, extra string) {
	t.Helper()
	data, err := os.ReadFile(env.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "listeners:\n") + len("listeners:\n")
	end := strings.Index(text, "store:\n")
	text = text[:start] + listeners + text[end:] + extra
	if err := os.WriteFile(env.ConfigPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// editConfig replaces old with new in env's configuration file.
func editConfig(t *testing.T, env *bridgetest.Env, old, new string) {
	t.Helper()
	data, err := os.ReadFile(env.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("config lacks %q", old)
	}
	text := strings.Replace(string(data), old, new, 1)
	if err := os.WriteFile(env.ConfigPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// dialLogin connects to the bridge at addr and authenticates.
func dialLogin(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Auth(sasl.NewPlainClient("", svcUser, svcPassword)); err != nil {
		t.Fatalf("AUTH at %s: %v", addr, err)
	}
	return c
}

// relay sends one message on c and returns the reply to its end of data.
func relay(c *smtp.Client, to string) (string, error) {
	if err := c.Mail(svcAccount, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write([]byte(svcMessage)); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}
