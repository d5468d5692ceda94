package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakegmail"
	"github.com/bridgemail/bridge/internal/testcert"
)

// configWith loads the harness's configuration file with its listeners
// replaced by listeners (YAML lines under "listeners:") and extra
// appended.
func (h *harness) configWith(t *testing.T, listeners, extra string) *config.Config {
	t.Helper()
	data, err := os.ReadFile(h.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "listeners:\n") + len("listeners:\n")
	end := strings.Index(text, "store:\n")
	text = text[:start] + listeners + text[end:] + extra
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("loading changed config: %v\n%s", err, text)
	}
	return cfg
}

func (h *harness) reload(t *testing.T, cfg *config.Config) {
	t.Helper()
	providers, err := auth.NewProviders(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Reload(cfg, providers); err != nil {
		t.Fatalf("Reload: %v", err)
	}
}

func tlsListener(mode string, certs *testcert.Certs, extra string) string {
	return "  - address: 127.0.0.1:0\n    tls: " + mode + "\n    cert_file: " + certs.CertFile +
		"\n    key_file: " + certs.KeyFile + "\n" + extra
}

func loginAt(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatalf("AUTH PLAIN at %s: %v", addr, err)
	}
	return c
}

func TestReloadAddsListenerKeepsSession(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	old := h.login(t)

	h.reload(t, h.configWith(t, "  - address: 127.0.0.1:0\n  - address: localhost:0\n", ""))
	addrs := h.srv.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("listeners after reload = %v, want 2", addrs)
	}
	if addrs[0].String() != h.addr {
		t.Errorf("first listener moved from %s to %s", h.addr, addrs[0])
	}

	added := loginAt(t, addrs[1].String())
	if _, err := send(added, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send on the new listener: %v", err)
	}
	if _, err := send(old, testAccount, []string{"b@example.org"}, testMessage); err != nil {
		t.Fatalf("send on the session opened before the reload: %v", err)
	}
	h.Gmail.WaitMessages(t, 2, 5*time.Second)
}

func TestReloadRemovesListenerSessionContinues(t *testing.T) {
	h := newHarness(t, bridgetest.Options{Listeners: "  - address: 127.0.0.1:0\n  - address: localhost:0\n"})
	second := h.srv.Addrs()[1].String()
	c := loginAt(t, second)

	h.reload(t, h.configWith(t, "  - address: 127.0.0.1:0\n", ""))
	if n := len(h.srv.Addrs()); n != 1 {
		t.Fatalf("listeners after reload = %d, want 1", n)
	}
	if conn, err := net.DialTimeout("tcp", second, time.Second); err == nil {
		conn.Close()
		t.Errorf("removed listener %s still accepts", second)
	}
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send on a session of the removed listener: %v", err)
	}
	h.Gmail.WaitMessages(t, 1, 5*time.Second)
}

func TestReloadBadCertificateChangesNothing(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	certs := testcert.New(t)
	cfg := h.configWith(t, "  - address: 127.0.0.1:0\n"+strings.Replace(tlsListener("implicit", certs, ""),
		"127.0.0.1:0", "localhost:0", 1), "limits:\n  max_recipients: 1\n")
	// The certificate was valid when the file was loaded and broke before
	// the reload applied it.
	if err := os.WriteFile(certs.CertFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	providers, err := auth.NewProviders(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = h.srv.Reload(cfg, providers)
	if err == nil || !strings.Contains(err.Error(), "loading certificate") {
		t.Fatalf("Reload = %v, want a certificate error", err)
	}
	if n := len(h.srv.Addrs()); n != 1 {
		t.Errorf("listeners = %d, want the old 1", n)
	}
	if got := h.srv.cfg().Limits.MaxRecipients; got != config.DefaultMaxRecipients {
		t.Errorf("max_recipients = %d, want the old %d", got, config.DefaultMaxRecipients)
	}
	c := h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org", "b@example.org"}, testMessage); err != nil {
		t.Fatalf("send after the rejected reload: %v", err)
	}
}

func TestReloadLimitsReachOpenSessions(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	c := h.login(t)

	h.reload(t, h.configWith(t, "  - address: 127.0.0.1:0\n", "limits:\n  max_recipients: 1\n  max_message_bytes: 1000\n"))
	if err := c.Mail(testAccount, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.org", nil); smtpCode(err) != 452 {
		t.Errorf("second RCPT after reload: %v, want 452", err)
	}
	c.Reset()

	r := h.raw(t)
	if reply := r.cmd("EHLO printer", "250"); !strings.Contains(reply, "SIZE 1000") {
		t.Errorf("EHLO of a new connection lacks the new SIZE:\n%s", reply)
	}
}

func TestStartTLSListener(t *testing.T) {
	certs := testcert.New(t)
	h := newHarness(t, bridgetest.Options{Listeners: tlsListener("starttls", certs, "")})

	r := h.raw(t)
	if reply := r.cmd("EHLO printer", "250"); strings.Contains(reply, "AUTH") || !strings.Contains(reply, "STARTTLS") {
		t.Errorf("EHLO before STARTTLS must offer STARTTLS and no AUTH:\n%s", reply)
	}
	r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "5")

	c, err := smtp.DialStartTLS(h.addr, certs.ClientTLS("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatalf("AUTH after STARTTLS: %v", err)
	}
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatal(err)
	}
	h.Gmail.WaitMessages(t, 1, 5*time.Second)
}

func TestImplicitTLSListener(t *testing.T) {
	certs := testcert.New(t)
	h := newHarness(t, bridgetest.Options{Listeners: tlsListener("implicit", certs, "")})

	c, err := smtp.DialTLS(h.addr, certs.ClientTLS("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatal(err)
	}
	h.Gmail.WaitMessages(t, 1, 5*time.Second)
}

func handshake(addr string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	return conn.Close()
}

func TestMinTLSVersion(t *testing.T) {
	certs := testcert.New(t)
	lenientYAML := strings.Replace(tlsListener("implicit", certs, "    min_tls_version: \"1.0\"\n"),
		"127.0.0.1:0", "localhost:0", 1)
	h := newHarness(t, bridgetest.Options{Listeners: tlsListener("implicit", certs, "") + lenientYAML})
	strict, lenient := h.srv.Addrs()[0].String(), h.srv.Addrs()[1].String()

	old := certs.ClientTLS("localhost")
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if err := handshake(strict, old); err == nil {
		t.Errorf("TLS 1.1 client accepted by a listener with min_tls_version 1.2")
	}
	if err := handshake(lenient, old); err != nil {
		t.Errorf("TLS 1.1 client rejected by a listener with min_tls_version 1.0: %v", err)
	}
	if err := handshake(strict, certs.ClientTLS("localhost")); err != nil {
		t.Errorf("TLS 1.2 client rejected: %v", err)
	}
}

func TestReloadReplacesCertificate(t *testing.T) {
	first, second := testcert.New(t), testcert.New(t)
	h := newHarness(t, bridgetest.Options{Listeners: tlsListener("implicit", first, "")})
	if err := handshake(h.addr, first.ClientTLS("localhost")); err != nil {
		t.Fatal(err)
	}

	h.reload(t, h.configWith(t, tlsListener("implicit", second, ""), ""))
	if got := h.srv.Addrs()[0].String(); got != h.addr {
		t.Fatalf("listener moved to %s", got)
	}
	if err := handshake(h.addr, second.ClientTLS("localhost")); err != nil {
		t.Errorf("new certificate not presented after reload: %v", err)
	}
	if err := handshake(h.addr, first.ClientTLS("localhost")); err == nil {
		t.Errorf("old certificate still presented after reload")
	}
}

func TestAllowInsecureAuth(t *testing.T) {
	for _, tc := range []struct {
		name string
		lc   config.Listener
		want bool
	}{
		{"plain loopback", config.Listener{Address: "127.0.0.1:2525", TLS: config.TLSNone}, true},
		{"plain localhost", config.Listener{Address: "localhost:2525", TLS: config.TLSNone}, true},
		{"plain network with insecure_auth", config.Listener{Address: "192.0.2.1:25", TLS: config.TLSNone, InsecureAuth: true}, true},
		{"plain network", config.Listener{Address: "192.0.2.1:25", TLS: config.TLSNone}, false},
		{"starttls loopback", config.Listener{Address: "127.0.0.1:587", TLS: config.TLSStartTLS}, false},
		{"starttls network", config.Listener{Address: "192.0.2.1:587", TLS: config.TLSStartTLS}, false},
		{"starttls network with insecure_auth", config.Listener{Address: "192.0.2.1:587", TLS: config.TLSStartTLS, InsecureAuth: true}, true},
		{"implicit network", config.Listener{Address: "192.0.2.1:465", TLS: config.TLSImplicit}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := allowInsecureAuth(tc.lc); got != tc.want {
				t.Errorf("allowInsecureAuth = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMaxConnections(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "limits:\n  max_connections: 1\n"})
	first := h.raw(t)
	first.cmd("EHLO printer", "250")

	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	second := &rawConn{t: t, conn: conn}
	second.expect("421 4.7.0")

	first.cmd("QUIT", "221")
	first.conn.Close()
	// The slot frees when the bridge closes its side.
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.Status().Listeners[0].Connections != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	h.raw(t).cmd("EHLO printer", "250")
}

// shutdownAsync starts Shutdown with the grace period and returns its
// result channel.
func (h *harness) shutdownAsync(grace time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		done <- h.srv.Shutdown(ctx)
	}()
	return done
}

// expectClosed reads until the peer closes the connection.
func (r *rawConn) expectClosed() {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(r.conn); err != nil {
		r.t.Fatalf("connection not closed: %v", err)
	}
}

func (r *rawConn) authenticate() {
	r.t.Helper()
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
}

func TestShutdownClosesIdleWaitsForTransaction(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	idle := h.raw(t)
	idle.authenticate()
	busy := h.raw(t)
	busy.authenticate()
	busy.cmd("MAIL FROM:<"+testAccount+">", "250")
	busy.cmd("RCPT TO:<a@example.org>", "250")
	waiting := h.raw(t) // connected, no EHLO yet

	done := h.shutdownAsync(10 * time.Second)
	idle.expect("421 4.3.2")
	idle.expectClosed()
	waiting.expectClosed()
	if conn, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("stopping server still accepts connections")
	}

	busy.cmd("DATA", "354")
	busy.send(strings.TrimSuffix(testMessage, "\r\n"))
	reply := busy.cmd(".", "250 ")
	if !strings.Contains(reply, "gsmtp") {
		t.Errorf("reply %q is not the upstream's", reply)
	}
	busy.expect("421 4.3.2")
	busy.expectClosed()
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
	h.Gmail.WaitMessages(t, 1, 5*time.Second)
}

func TestShutdownRsetEndsTransaction(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	busy := h.raw(t)
	busy.authenticate()
	busy.cmd("MAIL FROM:<"+testAccount+">", "250")

	done := h.shutdownAsync(10 * time.Second)
	// Wait until the stop has begun: new connections are refused.
	for {
		conn, err := net.DialTimeout("tcp", h.addr, time.Second)
		if err != nil {
			break
		}
		conn.Close()
		time.Sleep(10 * time.Millisecond)
	}
	busy.cmd("RSET", "250")
	busy.expect("421 4.3.2")
	busy.expectClosed()
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}

func TestShutdownGraceOverGives4xx(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Delay: 20 * time.Second})
	c := h.login(t)
	if err := c.Mail(testAccount, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(testMessage)); err != nil {
		t.Fatal(err)
	}
	replied := make(chan error, 1)
	go func() { replied <- w.Close() }()

	done := h.shutdownAsync(200 * time.Millisecond)
	err = <-replied
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code/100 != 4 {
		t.Fatalf("reply to the end of data = %v, want a 4xx", err)
	}
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the deadline", err)
	}
}

func TestStatusRecordsActivity(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	c := h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatal(err)
	}
	st := h.srv.Status()
	if len(st.Accounts) != 1 || st.Accounts[0].Account != testAccount {
		t.Fatalf("accounts = %+v, want %s alone", st.Accounts, testAccount)
	}
	if st.Accounts[0].Sent != 1 {
		t.Errorf("sent = %d, want 1", st.Accounts[0].Sent)
	}
	if st.Accounts[0].LastSent.IsZero() {
		t.Errorf("last sent not recorded")
	}
	if st.Accounts[0].LastError != "" {
		t.Errorf("last error = %q after a success", st.Accounts[0].LastError)
	}
	if len(st.Listeners) != 1 || st.Listeners[0].Address != h.addr || st.Listeners[0].TLS != "none" {
		t.Errorf("listeners = %+v", st.Listeners)
	}

	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageMail, Drop: true, Times: fakegmail.Always})
	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageGreeting, Drop: true, Times: fakegmail.Always})
	c2 := h.login(t)
	if err := c2.Mail(testAccount, nil); err == nil {
		t.Fatal("MAIL succeeded with a dropping upstream")
	}
	st = h.srv.Status()
	if st.Accounts[0].LastError == "" || st.Accounts[0].LastErrorAt.IsZero() {
		t.Errorf("last error not recorded: %+v", st.Accounts[0])
	}
}

func TestCheckAccount(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	expiry, err := h.srv.CheckAccount(context.Background(), h.Provider, testAccount)
	if err != nil {
		t.Fatalf("CheckAccount: %v", err)
	}
	if !expiry.After(time.Now()) {
		t.Errorf("expiry %v is not in the future", expiry)
	}
	if n := h.Gmail.AuthAttempts(); n != 1 {
		t.Errorf("upstream AUTH attempts = %d, want 1", n)
	}

	h.OAuth.RevokeAll()
	_, err = h.srv.CheckAccount(context.Background(), h.Provider, testAccount)
	var ce *auth.ConsentError
	if !errors.As(err, &ce) {
		t.Errorf("CheckAccount after revocation = %v, want a ConsentError", err)
	}
}

func TestShutdownIdleTLSGets421(t *testing.T) {
	for _, mode := range []string{"starttls", "implicit"} {
		t.Run(mode, func(t *testing.T) {
			certs := testcert.New(t)
			h := newHarness(t, bridgetest.Options{Listeners: tlsListener(mode, certs, "")})
			conn, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			r := &rawConn{t: t, conn: conn}
			if mode == "starttls" {
				r.expect("220")
				r.cmd("EHLO printer", "250")
				r.cmd("STARTTLS", "220")
			}
			tc := tls.Client(conn, certs.ClientTLS("localhost"))
			r.conn = tc
			if mode == "implicit" {
				r.expect("220")
			}
			r.authenticate()

			done := h.shutdownAsync(10 * time.Second)
			r.expect("421 4.3.2")
			r.expectClosed()
			if err := <-done; err != nil {
				t.Errorf("Shutdown = %v", err)
			}
		})
	}
}

func TestRetryLogHasSessionID(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "pool:\n  max_idle: -1\n"})
	c := h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatal(err)
	}
	h.OAuth.ExpireAccessTokens()
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send after expiry: %v", err)
	}
	var retry string
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(line, "refreshing and retrying once") {
			retry = line
		}
	}
	if retry == "" {
		t.Fatalf("no retry line in the log:\n%s", h.logs)
	}
	for _, key := range []string{"session=", "user=" + testUser, "account=" + testAccount} {
		if !strings.Contains(retry, key) {
			t.Errorf("retry line lacks %s: %s", key, retry)
		}
	}
}

func TestReloadAddressInUseChangesNothing(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	cfg := h.configWith(t, "  - address: 127.0.0.1:0\n  - address: "+busy.Addr().String()+"\n", "")
	providers, err := auth.NewProviders(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Reload(cfg, providers); err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("Reload = %v, want an error naming %s", err, busy.Addr())
	}
	if addrs := h.srv.Addrs(); len(addrs) != 1 || addrs[0].String() != h.addr {
		t.Errorf("listeners = %v, want the old %s", addrs, h.addr)
	}
	if h.srv.cfg() != h.Config {
		t.Errorf("settings replaced by a failed reload")
	}
	h.raw(t).cmd("EHLO printer", "250")
}
