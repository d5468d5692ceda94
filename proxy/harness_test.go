package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/store"
)

// syncBuffer is a log destination that tests can read while the server
// writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Reset drops what was written so far.
func (b *syncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is a bridge server in this process, between a fake provider and
// a fake submission server.
type harness struct {
	*bridgetest.Env
	store  *store.Store
	srv    *Server
	tokens *auth.Tokens
	addr   string
	logs   *syncBuffer
}

const (
	testUser     = "printer"
	testPassword = "correct horse battery"
	testAccount  = "scanner@example.com"
)

func newHarness(t testing.TB, opts bridgetest.Options) *harness {
	t.Helper()
	return newHarnessEnv(t, bridgetest.New(t, opts))
}

// newHarnessEnv starts a bridge for env, whose Config a test may have
// changed after bridgetest.New.
func newHarnessEnv(t testing.TB, env *bridgetest.Env) *harness {
	t.Helper()
	h := &harness{Env: env, store: env.OpenStore(t), logs: &syncBuffer{}}
	env.Seed(t, h.store, testUser, testPassword, testAccount)

	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	providers, err := auth.NewProviders(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	h.tokens = auth.NewTokens(h.store, providers, log)
	h.tokens.Timeout = env.Config.Limits.TokenTimeout
	passwords, err := auth.NewPasswordChecker(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	h.srv, err = New(Options{
		Config:    env.Config,
		Users:     h.store,
		Tokens:    h.tokens,
		Providers: providers,
		Passwords: passwords,
		Log:       log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Start(); err != nil {
		t.Fatal(err)
	}
	h.addr = h.srv.Addrs()[0].String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.srv.Shutdown(ctx)
		if t.Failed() {
			t.Logf("bridge log:\n%s", h.logs.String())
		}
	})
	return h
}

// waitIdle waits until the pool holds n idle connections of the test
// account. The client gets the reply to the end of data before the
// session returns its connection to the pool.
func (h *harness) waitIdle(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.pool.idleCount(testAccount) != n {
		if time.Now().After(deadline) {
			t.Fatalf("idle upstream connections = %d, want %d", h.srv.pool.idleCount(testAccount), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitNoneInUse waits until every upstream connection of the test
// account is back in the pool, such as after the replies to the end of
// data of several sessions.
func (h *harness) waitNoneInUse(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.pool.openCount(testAccount) != h.srv.pool.idleCount(testAccount) {
		if time.Now().After(deadline) {
			t.Fatalf("upstream connections in use = %d, want 0",
				h.srv.pool.openCount(testAccount)-h.srv.pool.idleCount(testAccount))
		}
		time.Sleep(time.Millisecond)
	}
}

// dial connects a go-smtp client to the bridge.
func (h *harness) dial(t testing.TB) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// login connects and authenticates with AUTH PLAIN.
func (h *harness) login(t testing.TB) *smtp.Client {
	t.Helper()
	c := h.dial(t)
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatalf("AUTH PLAIN: %v", err)
	}
	return c
}

// send runs one transaction on c and returns the reply to the end of data.
func send(c *smtp.Client, from string, to []string, msg string) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

// rawConn is a plain TCP conversation with the bridge, for what go-smtp's
// client cannot send.
type rawConn struct {
	t    testing.TB
	conn net.Conn
	buf  []byte
}

func (h *harness) raw(t testing.TB) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := &rawConn{t: t, conn: conn}
	r.expect("220")
	return r
}

// readReply reads one whole, possibly multi-line, reply.
func (r *rawConn) readReply() string {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var lines []string
	for {
		line := r.readLine()
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (r *rawConn) readLine() string {
	r.t.Helper()
	for {
		if i := bytes.Index(r.buf, []byte("\r\n")); i >= 0 {
			line := string(r.buf[:i])
			r.buf = r.buf[i+2:]
			return line
		}
		chunk := make([]byte, 4096)
		n, err := r.conn.Read(chunk)
		if err != nil {
			r.t.Fatalf("reading reply: %v (have %q)", err, r.buf)
		}
		r.buf = append(r.buf, chunk[:n]...)
	}
}

func (r *rawConn) send(line string) {
	r.t.Helper()
	if _, err := r.conn.Write([]byte(line + "\r\n")); err != nil {
		r.t.Fatal(err)
	}
}

// expect reads a reply and fails unless it starts with prefix.
func (r *rawConn) expect(prefix string) string {
	r.t.Helper()
	reply := r.readReply()
	if !strings.HasPrefix(reply, prefix) {
		r.t.Fatalf("reply %q, want prefix %q", reply, prefix)
	}
	return reply
}

// cmd sends a line and expects a reply starting with prefix.
func (r *rawConn) cmd(line, prefix string) string {
	r.t.Helper()
	r.send(line)
	return r.expect(prefix)
}

func smtpCode(err error) int {
	if se, ok := err.(*smtp.SMTPError); ok {
		return se.Code
	}
	return 0
}
