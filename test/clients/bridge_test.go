package clients

import (
	"bytes"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakegmail"
)

const (
	// The local login that every client uses, and the account it sends
	// as. The password has the form of those that bridge authorize generates.
	testUser     = "printer"
	testPassword = "Xq7mK2pR9tLw4vNb8cJd"
	testAccount  = "scanner@example.com"

	// startTimeout bounds how long the binary may take to listen, and
	// stopTimeout how long it may take to exit after SIGTERM.
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// bridgeProc is a `bridge serve` subprocess with its fakes.
type bridgeProc struct {
	*bridgetest.Env
	// Addr is the host:port of its SMTP listener.
	Addr string
	// Host and Port are Addr split.
	Host, Port string

	cmd  *exec.Cmd
	logs *logBuffer
	done chan struct{}
	err  error // the result of cmd.Wait, set before done is closed
}

// listeningRE matches the log line that proxy.Server writes for each
// listener it opens, in the text format that the test config selects.
var listeningRE = regexp.MustCompile(`msg=listening address=(\S+)`)

// startBridge seeds the store with the test user, starts the binary with
// the config that bridgetest wrote, and stops it when the test ends. Each
// of limits is a "key: value" line for the limits section of the config.
func startBridge(t *testing.T, limits ...string) *bridgeProc {
	t.Helper()
	yaml := "limits:\n  shutdown_grace: 5s\n"
	for _, l := range limits {
		yaml += "  " + l + "\n"
	}
	env := bridgetest.New(t, bridgetest.Options{
		ExtraYAML: yaml,
		Gmail: func(o *fakegmail.Options) {
			// The fake Gmail, like go-smtp's server, must get the whole
			// DATA body within its read timeout. Through a binary built
			// with the race detector, the 25 MB message can take most of
			// a minute on a busy 2-core machine.
			o.ReadTimeout = clientTimeout
		},
	})

	// bbolt lets one process hold the database, so the store is seeded
	// and closed before the binary opens it.
	st := env.OpenStore(t)
	env.Seed(t, st, testUser, testPassword, testAccount)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	p := &bridgeProc{Env: env, logs: newLogBuffer(), done: make(chan struct{})}
	p.cmd = exec.Command(bridgeBin, "serve", "--config", env.ConfigPath)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	// A test binary that dies without its cleanup takes the bridge along.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })

	line, err := p.logs.waitFor(listeningRE, 1, startTimeout, p.done)
	if err != nil {
		t.Fatalf("bridge did not start listening: %v\nlog:\n%s", err, p.logs)
	}
	p.Addr = listeningRE.FindStringSubmatch(line)[1]
	p.Host, p.Port, _ = strings.Cut(p.Addr, ":")
	return p
}

// stop sends SIGTERM and waits for the process to exit, and kills it after
// stopTimeout. A non-zero exit or a race report fails the test.
func (p *bridgeProc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			p.cmd.Process.Kill()
			<-p.done
			t.Errorf("bridge did not exit within %v of SIGTERM", stopTimeout)
		}
	}
	logs := p.logs.String()
	if p.err != nil {
		t.Errorf("bridge exited: %v", p.err)
	}
	if strings.Contains(logs, "WARNING: DATA RACE") {
		t.Errorf("the race detector reported a race in the bridge")
	}
	if t.Failed() {
		t.Logf("bridge log:\n%s", logs)
	}
}

// waitLog waits until a log line matches re and returns that line.
func (p *bridgeProc) waitLog(t *testing.T, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	return p.waitLogN(t, re, 1, timeout)
}

// waitLogN waits until n log lines match re and returns the nth.
func (p *bridgeProc) waitLogN(t *testing.T, re *regexp.Regexp, n int, timeout time.Duration) string {
	t.Helper()
	line, err := p.logs.waitFor(re, n, timeout, p.done)
	if err != nil {
		t.Fatalf("bridge log: %v", err)
	}
	return line
}

// newMessages waits until the fake Gmail holds n messages after the first
// skip, and returns those n. The wait is as long as a client may run,
// because Postfix delivers after its sendmail has returned.
func newMessages(t *testing.T, g *fakegmail.Server, skip, n int) []fakegmail.Message {
	t.Helper()
	msgs := g.WaitMessages(t, skip+n, clientTimeout)
	return msgs[skip:]
}

// logBuffer collects the output of the binary and lets tests wait for a
// line. It is safe for concurrent use.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLogBuffer() *logBuffer {
	return &logBuffer{changed: make(chan struct{})}
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor returns the nth complete line that matches re. It gives up
// after timeout, or when exited is closed and fewer lines match.
func (b *logBuffer) waitFor(re *regexp.Regexp, n int, timeout time.Duration, exited <-chan struct{}) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		lines := matchLines(b.buf.Bytes(), re)
		changed := b.changed
		b.mu.Unlock()
		if len(lines) >= n {
			return lines[n-1], nil
		}
		select {
		case <-changed:
		case <-exited:
			// The output is complete once the process has exited.
			if lines := matchLines([]byte(b.String()), re); len(lines) >= n {
				return lines[n-1], nil
			}
			return "", errExited{re, n}
		case <-deadline.C:
			return "", errTimeout{re, n, timeout}
		}
	}
}

// count returns the number of complete lines that match re.
func (b *logBuffer) count(re *regexp.Regexp) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(matchLines(b.buf.Bytes(), re))
}

// matchLines returns the complete lines of data that match re.
func matchLines(data []byte, re *regexp.Regexp) []string {
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
	} else {
		return nil
	}
	var lines []string
	for line := range bytes.Lines(data) {
		if re.Match(line) {
			lines = append(lines, strings.TrimSuffix(string(line), "\n"))
		}
	}
	return lines
}

type errExited struct {
	re *regexp.Regexp
	n  int
}

func (e errExited) Error() string {
	return fmt.Sprintf("process exited with fewer than %d lines matching %s", e.n, e.re)
}

type errTimeout struct {
	re      *regexp.Regexp
	n       int
	timeout time.Duration
}

func (e errTimeout) Error() string {
	return fmt.Sprintf("fewer than %d lines matching %s within %v", e.n, e.re, e.timeout)
}
