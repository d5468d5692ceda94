package proxy

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakegmail"
	"github.com/bridgemail/bridge/internal/fakeoauth"
	"github.com/bridgemail/bridge/internal/testcert"
)

// faultTimeouts makes every upstream step time out quickly. faultDelay is
// longer than all of them, and a delayed fake is cut short when the test
// ends.
const (
	faultTimeouts = `limits:
  upstream_timeout: 1s
  upstream_data_timeout: 1s
  dial_timeout: 1s
  token_timeout: 1s
`
	faultDelay = 30 * time.Second
)

// faultCase is one way the upstream or the token endpoint can fail.
type faultCase struct {
	name string
	// arm makes the fault happen on the next message. The test clears
	// the faults of the fakes afterwards, and undo reverts the rest.
	arm  func(t *testing.T, h *harness, g *gate)
	undo func(h *harness, g *gate)
	// body replaces testMessage.
	body string
	// code is the exact reply code expected, or 0 for any of class.
	code     int
	class    int
	enhanced smtp.EnhancedCode
	// logs must all appear in the bridge's log: the cause, named.
	logs []string
	// connecting is set for the faults before the upstream session is
	// ready, which differ between the implicit TLS and STARTTLS ports.
	connecting bool
	// mayBeDelivered is set where the upstream may accept the message
	// after the bridge gave up waiting for its reply. The client then
	// gets 4xx and may send it again: a duplicate, never a loss.
	mayBeDelivered bool
}

func gmailFault(f fakegmail.Fault) func(*testing.T, *harness, *gate) {
	return func(_ *testing.T, h *harness, _ *gate) { h.Gmail.AddFault(f) }
}

func tokenFault(f fakeoauth.TokenFault, delay time.Duration) func(*testing.T, *harness, *gate) {
	return func(_ *testing.T, h *harness, _ *gate) {
		h.OAuth.SetTokenFault(f)
		h.OAuth.SetTokenDelay(delay)
	}
}

// bigMessage is large enough to fill the socket buffers between the bridge
// and a gate that has stopped reading, so that a write blocks. The gate's
// buffers are small; the bridge's send buffer may grow to 4 MiB, the
// default maximum of Linux's net.ipv4.tcp_wmem.
var bigMessage = testMessage + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 80_000)

// gateBuffer is the size of the gate's socket buffers.
const gateBuffer = 16 << 10

var faultCases = []faultCase{
	// Connecting.
	{name: "connection refused", connecting: true, arm: func(_ *testing.T, _ *harness, g *gate) { g.refuse() },
		undo: func(_ *harness, g *gate) { g.open() },
		code: 451, enhanced: smtp.EnhancedCode{4, 4, 1}, logs: []string{"upstream unreachable", "connection refused"}},
	{name: "certificate does not verify", connecting: true, arm: func(t *testing.T, h *harness, _ *gate) {
		h.Gmail.SetCerts(testcert.NewUntrusted(t))
	}, undo: func(h *harness, _ *gate) { h.Gmail.SetCerts(nil) },
		code: 454, enhanced: smtp.EnhancedCode{4, 7, 0},
		logs: []string{"upstream certificate did not verify", "certificate signed by unknown authority"}},
	{name: "greeting 421", connecting: true, arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageGreeting, Reply: fakegmail.TryAgainLater}),
		code: 451, logs: []string{"upstream rejected the session", "Try again later"}},
	{name: "greeting dropped", connecting: true, arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageGreeting, Drop: true}),
		class: 4, logs: []string{"upstream unreachable"}},
	{name: "greeting slow", connecting: true, arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageGreeting, Delay: faultDelay}),
		code: 451, logs: []string{"upstream timed out"}},

	// Logging in upstream.
	{name: "auth too many login attempts", connecting: true, arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageAuth, Reply: fakegmail.TooManyLoginAttempts}),
		code: 454, enhanced: smtp.EnhancedCode{4, 7, 0}, logs: []string{"Too many login attempts"}},
	{name: "auth temporary failure", connecting: true, arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageAuth, Reply: fakegmail.TemporaryAuthFailure}),
		code: 454, enhanced: smtp.EnhancedCode{4, 7, 0}},
	{name: "auth 421", connecting: true, arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageAuth, Reply: fakegmail.TryAgainLater}),
		code: 451, enhanced: smtp.EnhancedCode{4, 7, 0}},
	{name: "auth dropped", connecting: true, arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageAuth, Drop: true}),
		class: 4, logs: []string{"upstream connection lost"}},
	{name: "auth slow", connecting: true, arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageAuth, Delay: faultDelay}),
		code: 451, logs: []string{"upstream timed out"}},

	// The transaction.
	{name: "mail daily limit", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageMail, Reply: fakegmail.DailyLimit}),
		code: 550, enhanced: smtp.EnhancedCode{5, 4, 5}, logs: []string{"Daily user sending limit exceeded"}},
	{name: "mail 421", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageMail, Reply: fakegmail.TryAgainLater}),
		code: 451, enhanced: smtp.EnhancedCode{4, 7, 0}},
	{name: "mail dropped", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageMail, Drop: true}),
		class: 4, logs: []string{"upstream connection lost"}},
	{name: "mail slow", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageMail, Delay: faultDelay}),
		code: 451, logs: []string{"upstream timed out"}},
	{name: "rcpt too many recipients", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageRcpt, Reply: fakegmail.TooManyRecipients}),
		code: 452, enhanced: smtp.EnhancedCode{4, 5, 3}},
	{name: "rcpt 421", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageRcpt, Reply: fakegmail.TryAgainLater}),
		code: 451, enhanced: smtp.EnhancedCode{4, 7, 0}},
	{name: "rcpt dropped", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageRcpt, Drop: true}),
		class: 4, logs: []string{"upstream connection lost"}},
	{name: "rcpt slow", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageRcpt, Delay: faultDelay}),
		code: 451, logs: []string{"upstream timed out"}},
	{name: "data command dropped", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageData, Drop: true}),
		class: 4, logs: []string{"upstream connection lost"}},
	{name: "data command slow", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageData, Delay: faultDelay}),
		code: 451, logs: []string{"upstream timed out"}},
	{name: "data body dropped", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageDataBody, AfterBytes: 100, Drop: true}),
		body: testMessage + strings.Repeat("line of the body that keeps going\r\n", 2000), class: 4},
	{name: "data body not read", arm: func(_ *testing.T, _ *harness, g *gate) { g.stallAfter(64 << 10) },
		undo: func(_ *harness, g *gate) { g.stallAfter(0) },
		body: bigMessage, code: 451, logs: []string{"upstream timed out", "write tcp"}},
	{name: "final dot dropped", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Drop: true}),
		class: 4, logs: []string{"upstream connection lost"}},
	{name: "final dot slow", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Delay: faultDelay}),
		code: 451, logs: []string{"upstream timed out"}, mayBeDelivered: true},
	{name: "final dot 421", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Reply: fakegmail.TryAgainLater}),
		code: 451, enhanced: smtp.EnhancedCode{4, 7, 0}},
	{name: "final dot daily limit", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Reply: fakegmail.DailyLimit}),
		code: 550, enhanced: smtp.EnhancedCode{5, 4, 5}},
	{name: "final dot too big", arm: gmailFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Reply: fakegmail.TooBig}),
		code: 552, enhanced: smtp.EnhancedCode{5, 3, 4}},

	// The token endpoint.
	{name: "token endpoint 500", arm: tokenFault(fakeoauth.ServerError, 0),
		code: 454, enhanced: smtp.EnhancedCode{4, 7, 0}, logs: []string{"token endpoint unavailable"}},
	{name: "token endpoint broken json", arm: tokenFault(fakeoauth.BrokenJSON, 0),
		code: 454, enhanced: smtp.EnhancedCode{4, 7, 0}, logs: []string{"token endpoint unavailable"}},
	{name: "token endpoint slow", arm: tokenFault(fakeoauth.NoFault, faultDelay),
		code: 454, enhanced: smtp.EnhancedCode{4, 7, 0}, logs: []string{"token endpoint unavailable"}},
	{name: "token invalid grant", arm: tokenFault(fakeoauth.InvalidGrant, 0),
		code: 535, enhanced: smtp.EnhancedCode{5, 7, 8}, logs: []string{"bridge authorize " + testUser}},
}

// TestFaults sends one message into each fault and checks the reply class
// and that nothing was delivered behind a failure reply. Once the fault is
// gone, the next message must go through on the same session and on a new
// one.
func TestFaults(t *testing.T) {
	for _, tc := range faultCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runFault(t, tc, false)
		})
	}
}

// TestFaultsStartTLS repeats the faults of connecting and logging in with
// an upstream on the STARTTLS port, where the bridge reads the greeting
// and starts TLS itself.
func TestFaultsStartTLS(t *testing.T) {
	for _, tc := range faultCases {
		if !tc.connecting {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runFault(t, tc, true)
		})
	}
}

// runFault sends one message into the fault of tc and checks the
// recovery.
func runFault(t *testing.T, tc faultCase, startTLS bool) {
	env := bridgetest.New(t, bridgetest.Options{ExtraYAML: faultTimeouts, StartTLS: startTLS})
	g := startGate(t, env.Gmail.Addr())
	p := env.Config.Providers[env.Provider]
	p.Upstream.Address = g.addr
	env.Config.Providers[env.Provider] = p
	// A fresh upstream connection for every message, so each
	// fault meets a new dial and login.
	env.Config.Pool.MaxIdle = -1
	h := newHarnessEnv(t, env)

	tc.arm(t, h, g)
	c := h.login(t)
	body := tc.body
	if body == "" {
		body = testMessage
	}
	reply, err := send(c, testAccount, []string{"a@example.org"}, body)
	checkFaultReply(t, tc, reply, err)
	if n := len(h.Gmail.Messages()); n != 0 && !tc.mayBeDelivered {
		t.Errorf("upstream accepted %d messages behind a failure reply", n)
	}
	logs := h.logs.String()
	for _, want := range tc.logs {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}

	h.Gmail.ClearFaults()
	h.OAuth.SetTokenFault(fakeoauth.NoFault)
	h.OAuth.SetTokenDelay(0)
	if tc.undo != nil {
		tc.undo(h, g)
	}
	before := len(h.Gmail.Messages())
	c.Reset()
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("same session after the fault: %v", err)
	}
	c2 := h.login(t)
	if _, err := send(c2, testAccount, []string{"b@example.org"}, testMessage); err != nil {
		t.Fatalf("new session after the fault: %v", err)
	}
	h.Gmail.WaitMessages(t, before+2, 10*time.Second)
}

func checkFaultReply(t *testing.T, tc faultCase, reply string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("client got success %q for a message that met a fault", reply)
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("client got %v, want an SMTP reply", err)
	}
	if tc.code != 0 && se.Code != tc.code {
		t.Errorf("reply code = %d (%v), want %d", se.Code, se, tc.code)
	}
	class := tc.class
	if class == 0 {
		class = tc.code / 100
	}
	if se.Code/100 != class {
		t.Errorf("reply class = %dxx (%v), want %dxx", se.Code/100, se, class)
	}
	if tc.enhanced != (smtp.EnhancedCode{}) && se.EnhancedCode != tc.enhanced {
		t.Errorf("enhanced code = %v, want %v", se.EnhancedCode, tc.enhanced)
	}
	if se.EnhancedCode[0] != se.Code/100 {
		t.Errorf("enhanced code %v does not match reply code %d", se.EnhancedCode, se.Code)
	}
}

// gate forwards TCP connections to the fake submission server. It can stop
// listening, so that connections are refused, and listen again on the same
// port.
type gate struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	stall int64
	done  chan struct{}
}

func startGate(t testing.TB, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{t: t, target: target, addr: ln.Addr().String(), ln: ln, done: make(chan struct{})}
	go g.serve(ln)
	t.Cleanup(func() {
		close(g.done)
		g.refuse()
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, c := range g.conns {
			c.Close()
		}
	})
	return g
}

// refuse closes the listener. Connections already forwarded stay open.
func (g *gate) refuse() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		g.ln.Close()
		g.ln = nil
	}
}

// open listens again on the gate's address.
func (g *gate) open() {
	ln, err := net.Listen("tcp", g.addr)
	if err != nil {
		g.t.Errorf("gate: listening again on %s: %v", g.addr, err)
		return
	}
	g.mu.Lock()
	g.ln = ln
	g.mu.Unlock()
	go g.serve(ln)
}

func (g *gate) serve(ln net.Listener) {
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", g.target)
		if err != nil {
			client.Close()
			continue
		}
		// Small fixed socket buffers, so that a fake which stops reading
		// blocks the bridge's writes after a few hundred kilobytes.
		for _, c := range []net.Conn{client, server} {
			c.(*net.TCPConn).SetReadBuffer(gateBuffer)
			c.(*net.TCPConn).SetWriteBuffer(gateBuffer)
		}
		g.mu.Lock()
		g.conns = append(g.conns, client, server)
		stall := g.stall
		g.mu.Unlock()
		go g.pipe(server, client, stall)
		go g.pipe(client, server, 0)
	}
}

// stallAfter makes connections accepted later stop reading from the
// bridge after n bytes, as a server that stops reading does. Zero turns
// it off.
func (g *gate) stallAfter(n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stall = n
}

// pipe copies src to dst and then closes both, so that a drop on one side
// reaches the other. With stall above zero it stops reading after that
// many bytes and waits for the test to end.
func (g *gate) pipe(dst, src net.Conn, stall int64) {
	if stall > 0 {
		io.CopyN(dst, src, stall)
		<-g.done
	} else {
		io.Copy(dst, src)
	}
	dst.Close()
	src.Close()
}
