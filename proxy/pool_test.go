package proxy

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakegmail"
)

// traceBuffer collects the fake server's wire trace.
type traceBuffer struct{ syncBuffer }

// count returns how many client lines start with verb.
func (b *traceBuffer) count(verb string) int {
	n := 0
	for _, line := range strings.Split(b.String(), "\n") {
		// Lines look like "C: <conn id> MAIL FROM:<...>".
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "C:" && strings.EqualFold(f[2], verb) {
			n++
		}
	}
	return n
}

func traced(opts bridgetest.Options) (bridgetest.Options, *traceBuffer) {
	trace := &traceBuffer{}
	opts.Gmail = func(o *fakegmail.Options) { o.Trace = trace }
	return opts, trace
}

// sendOne sends testMessage in a session of its own, as a printer does.
func (h *harness) sendOne(t *testing.T) {
	t.Helper()
	c := h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
}

func TestPoolOneLoginForManySessions(t *testing.T) {
	opts, trace := traced(bridgetest.Options{})
	h := newHarness(t, opts)
	for range 5 {
		h.sendOne(t)
		h.waitIdle(t, 1)
	}
	h.Gmail.WaitMessages(t, 5, 5*time.Second)
	if n := h.Gmail.Conns(); n != 1 {
		t.Errorf("upstream connections = %d, want 1", n)
	}
	if n := h.Gmail.AuthAttempts(); n != 1 {
		t.Errorf("upstream AUTH attempts = %d, want 1", n)
	}
	// A transaction that ended with the reply to the end of data needs
	// no RSET, and without RSET nothing sends EHLO again.
	if n := trace.count("RSET"); n != 0 {
		t.Errorf("upstream got %d RSET commands, want 0", n)
	}
	if n := trace.count("EHLO"); n != 1 {
		t.Errorf("upstream got %d EHLO commands, want 1", n)
	}
}

func TestPoolRsetAfterAbortedTransaction(t *testing.T) {
	opts, trace := traced(bridgetest.Options{})
	h := newHarness(t, opts)
	c := h.login(t)
	if err := c.Mail(testAccount, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatalf("RSET: %v", err)
	}
	if n := trace.count("RSET"); n != 1 {
		t.Fatalf("upstream got %d RSET commands, want 1", n)
	}

	// The connection is reused, its transaction state is clear, and it
	// is not greeted again.
	if _, err := send(c, testAccount, []string{"b@example.org"}, testMessage); err != nil {
		t.Fatalf("send after RSET: %v", err)
	}
	m := h.Gmail.WaitMessages(t, 1, 5*time.Second)[0]
	if len(m.To) != 1 || m.To[0] != "b@example.org" {
		t.Errorf("recipients = %v, want [b@example.org]", m.To)
	}
	if n := h.Gmail.Conns(); n != 1 {
		t.Errorf("upstream connections = %d, want 1", n)
	}
	if n := trace.count("EHLO"); n != 1 {
		t.Errorf("upstream got %d EHLO commands, want 1", n)
	}
}

func TestPoolNoRsetAfterRejectedData(t *testing.T) {
	opts, trace := traced(bridgetest.Options{})
	h := newHarness(t, opts)
	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Reply: fakegmail.TooBig})
	c := h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); smtpCode(err) != 552 {
		t.Fatalf("send: %v, want 552", err)
	}
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("second send: %v", err)
	}
	if n := trace.count("RSET"); n != 0 {
		t.Errorf("upstream got %d RSET commands, want 0", n)
	}
	if n := h.Gmail.Conns(); n != 1 {
		t.Errorf("upstream connections = %d, want 1", n)
	}
}

func TestPoolIdleConnectionExpires(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "pool:\n  idle_timeout: 200ms\n"})
	h.sendOne(t)
	h.waitIdle(t, 1)

	// The reaper closes the connection once it has been idle too long.
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.pool.openCount(testAccount) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("open upstream connections = %d after the idle timeout, want 0",
				h.srv.pool.openCount(testAccount))
		}
		time.Sleep(10 * time.Millisecond)
	}

	h.sendOne(t)
	h.Gmail.WaitMessages(t, 2, 5*time.Second)
	if n := h.Gmail.Conns(); n != 2 {
		t.Errorf("upstream connections = %d, want 2", n)
	}
}

func TestPoolReuseOffWithNegativeMaxIdle(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "pool:\n  max_idle: -1\n"})
	for range 3 {
		h.sendOne(t)
	}
	h.Gmail.WaitMessages(t, 3, 5*time.Second)
	if n := h.Gmail.Conns(); n != 3 {
		t.Errorf("upstream connections = %d, want 3", n)
	}
	if n := h.srv.pool.idleCount(testAccount); n != 0 {
		t.Errorf("idle connections = %d, want 0", n)
	}
}

func TestPoolDeadConnectionReplaced(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault fakegmail.Fault
	}{
		{"drop at MAIL", fakegmail.Fault{Stage: fakegmail.StageMail, Drop: true}},
		{"421 at MAIL", fakegmail.Fault{Stage: fakegmail.StageMail, Reply: &smtp.SMTPError{
			Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Try again later, closing connection."}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, bridgetest.Options{})
			h.sendOne(t)
			h.waitIdle(t, 1)

			// The pooled connection fails at MAIL; the client must not
			// notice.
			h.Gmail.AddFault(tc.fault)
			h.sendOne(t)
			msgs := h.Gmail.WaitMessages(t, 2, 5*time.Second)
			if n := h.Gmail.Conns(); n != 2 {
				t.Errorf("upstream connections = %d, want 2", n)
			}
			if msgs[0].ConnID == msgs[1].ConnID {
				t.Error("second message was sent on the failed connection")
			}
			if n := h.srv.pool.openCount(testAccount); n != 1 {
				t.Errorf("open upstream connections = %d, want 1", n)
			}
		})
	}
}

func TestPoolFreshConnectionFailureReported(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	// A new connection that fails at MAIL is not retried: the client
	// gets the failure.
	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageMail, Drop: true})
	c := h.login(t)
	err := c.Mail(testAccount, nil)
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 451 {
		t.Fatalf("MAIL: %v, want 451", err)
	}
	if n := h.Gmail.Conns(); n != 1 {
		t.Errorf("upstream connections = %d, want 1", n)
	}
	if n := h.srv.pool.openCount(testAccount); n != 0 {
		t.Errorf("open upstream connections = %d, want 0", n)
	}
}

func TestPoolConnectionClosedWhileIdle(t *testing.T) {
	h := newHarness(t, bridgetest.Options{Gmail: func(o *fakegmail.Options) {
		o.ReadTimeout = time.Second
	}})
	h.sendOne(t)
	h.waitIdle(t, 1)

	// The server times the idle connection out with a 421 and closes it.
	// The pool notices before it sends anything.
	time.Sleep(1500 * time.Millisecond)
	h.sendOne(t)
	h.Gmail.WaitMessages(t, 2, 5*time.Second)
	if n := h.Gmail.Conns(); n != 2 {
		t.Errorf("upstream connections = %d, want 2", n)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "pooled upstream connection was closed by the server") {
		t.Errorf("log does not show the closed connection being detected:\n%s", logs)
	}
	if strings.Contains(logs, "retrying on a new one") {
		t.Errorf("closed connection was found only at MAIL:\n%s", logs)
	}
}

func TestPoolMaxConnsQueues(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "pool:\n  max_conns: 2\n  max_idle: 1\n"})
	// Slow ends of data keep connections busy, so sessions queue.
	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Delay: 20 * time.Millisecond, Times: fakegmail.Always})

	const sessions, perSession = 8, 4
	var wg sync.WaitGroup
	stop := make(chan struct{})
	maxOpen := 0
	var mu sync.Mutex
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := h.srv.pool.openCount(testAccount)
			mu.Lock()
			maxOpen = max(maxOpen, n)
			mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perSession {
				if err := sendSession(h.addr, fmt.Sprintf("Subject: %d-%d\r\n\r\nbody\r\n", i, j)); err != nil {
					t.Errorf("session %d message %d: %v", i, j, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)

	h.Gmail.WaitMessages(t, sessions*perSession, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if maxOpen > 2 {
		t.Errorf("open upstream connections peaked at %d, want at most 2", maxOpen)
	}
	if maxOpen < 2 {
		t.Errorf("open upstream connections peaked at %d; the test never filled the pool", maxOpen)
	}
	if n := h.srv.pool.idleCount(testAccount); n > 1 {
		t.Errorf("idle connections = %d, want at most 1", n)
	}
}

// sendSession logs in to the bridge, sends one message and quits.
func sendSession(addr, msg string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		return err
	}
	if _, err := send(c, testAccount, []string{"a@example.org"}, msg); err != nil {
		return err
	}
	return c.Quit()
}

func TestPoolQueueTimesOut(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "pool:\n  max_conns: 1\nlimits:\n  dial_timeout: 300ms\n"})
	holder := h.login(t)
	if err := holder.Mail(testAccount, nil); err != nil {
		t.Fatal(err)
	}

	c := h.login(t)
	err := c.Mail(testAccount, nil)
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 4, 5}) {
		t.Fatalf("MAIL while the only connection is busy: %v, want 451 4.4.5", err)
	}
	if !strings.Contains(se.Message, "busy") {
		t.Errorf("reply %q does not say the connections are busy", se.Message)
	}

	// Once the holder ends its transaction, the waiting side gets the
	// same connection.
	if err := holder.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send after the connection was freed: %v", err)
	}
	if n := h.Gmail.Conns(); n != 1 {
		t.Errorf("upstream connections = %d, want 1", n)
	}
}

func TestPoolFailedDialFreesSlot(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "pool:\n  max_conns: 1\n"})
	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageGreeting, Drop: true})
	c := h.login(t)
	if err := c.Mail(testAccount, nil); smtpCode(err)/100 != 4 {
		t.Fatalf("MAIL with the greeting dropped: %v, want a 4xx", err)
	}
	if n := h.srv.pool.openCount(testAccount); n != 0 {
		t.Errorf("open upstream connections after a failed dial = %d, want 0", n)
	}
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send after the failed dial: %v", err)
	}
}

func TestPoolClientGoneMidTransaction(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
	r.cmd("MAIL FROM:<"+testAccount+">", "250")
	r.cmd("RCPT TO:<a@example.org>", "250")
	r.conn.Close()

	// The session's Logout sends RSET upstream and keeps the connection.
	h.waitIdle(t, 1)
	h.sendOne(t)
	m := h.Gmail.WaitMessages(t, 1, 5*time.Second)[0]
	if len(m.To) != 1 {
		t.Errorf("recipients = %v, want one", m.To)
	}
	if n := h.Gmail.Conns(); n != 1 {
		t.Errorf("upstream connections = %d, want 1", n)
	}
}

func TestPoolManySessionsConcurrently(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "pool:\n  max_conns: 3\n  max_idle: 1\n"})
	const sessions, perSession = 12, 3
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := smtp.Dial(h.addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
				t.Error(err)
				return
			}
			for j := range perSession {
				if _, err := send(c, testAccount, []string{"a@example.org"},
					fmt.Sprintf("Subject: %d-%d\r\n\r\nbody\r\n", i, j)); err != nil {
					t.Errorf("session %d message %d: %v", i, j, err)
					return
				}
			}
			c.Quit()
		}()
	}
	wg.Wait()
	h.Gmail.WaitMessages(t, sessions*perSession, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.pool.openCount(testAccount) > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("open upstream connections = %d after all sessions ended, want at most 1",
				h.srv.pool.openCount(testAccount))
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPoolBurstOfSessionsOneTokenRequest(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	const sessions = 200
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := sendSession(h.addr, fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i)); err != nil {
				t.Errorf("session %d: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()

	h.Gmail.WaitMessages(t, sessions, 10*time.Second)
	if n := h.OAuth.RefreshRequests(); n != 1 {
		t.Errorf("refresh requests = %d, want 1", n)
	}
	if n, max := h.Gmail.Conns(), h.Config.Pool.MaxConns; n > max {
		t.Errorf("upstream connections = %d, want at most pool.max_conns = %d", n, max)
	}
	if n := h.Gmail.AuthAttempts(); n > h.Config.Pool.MaxConns {
		t.Errorf("upstream logins = %d, want at most %d", n, h.Config.Pool.MaxConns)
	}
}

func TestLastUseWrittenOncePerInterval(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	h.login(t)
	h.srv.background.Wait()
	first, err := h.store.User(testUser)
	if err != nil {
		t.Fatal(err)
	}
	if first.LastUsed.IsZero() {
		t.Fatal("first login did not record the last use")
	}

	// A burst of logins must not cost a store write each.
	time.Sleep(10 * time.Millisecond)
	h.login(t)
	h.srv.background.Wait()
	second, err := h.store.User(testUser)
	if err != nil {
		t.Fatal(err)
	}
	if !second.LastUsed.Equal(first.LastUsed) {
		t.Errorf("last use rewritten within %v: %v, then %v", touchInterval, first.LastUsed, second.LastUsed)
	}

	// Once the interval has passed, the next login is written again.
	h.srv.touched.Store(testUser, time.Now().Add(-touchInterval))
	h.login(t)
	h.srv.background.Wait()
	third, err := h.store.User(testUser)
	if err != nil {
		t.Fatal(err)
	}
	if !third.LastUsed.After(first.LastUsed) {
		t.Errorf("last use not updated after the interval: %v", third.LastUsed)
	}
}

func TestPoolExpiredIdleReplacedAtGet(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	h.sendOne(t)
	h.waitIdle(t, 1)

	// The idle connection expires before the reaper sees it, so the
	// next session closes it and dials a new one itself.
	h.srv.pool.mu.Lock()
	a := h.srv.pool.accounts[testAccount]
	a.idle[0].since = time.Now().Add(-time.Hour)
	h.srv.pool.mu.Unlock()

	h.sendOne(t)
	h.waitIdle(t, 1)
	if n := h.Gmail.Conns(); n != 2 {
		t.Errorf("upstream connections = %d, want 2", n)
	}
	// The new connection is counted against max_conns like any other.
	if n := h.srv.pool.openCount(testAccount); n != 1 {
		t.Errorf("open upstream connections = %d, want 1", n)
	}
}
