package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/testcert"
)

// TestNoOpenRelayOnAnyListener tries every way to start a transaction
// without a successful AUTH on a plain, a STARTTLS and an implicit TLS
// listener. None may reach the upstream.
func TestNoOpenRelayOnAnyListener(t *testing.T) {
	certs := testcert.New(t)
	tlsKeys := fmt.Sprintf("    cert_file: %s\n    key_file: %s\n", certs.CertFile, certs.KeyFile)
	h := newHarness(t, bridgetest.Options{
		Listeners: "  - address: 127.0.0.1:0\n" +
			"  - address: 127.0.0.2:0\n    tls: starttls\n" + tlsKeys +
			"  - address: 127.0.0.3:0\n    tls: implicit\n" + tlsKeys +
			"  - address: 127.0.0.4:0\n    tls: starttls\n    insecure_auth: true\n" + tlsKeys,
		// The failed logins below are not what this test is about.
		ExtraYAML: "throttle:\n  free_failures: 100\n  lockout_after: 100\n",
	})
	addrs := h.srv.Addrs()
	clientTLS := certs.ClientTLS("localhost")

	dialers := []struct {
		name string
		dial func(t *testing.T) *smtp.Client
	}{
		{"plain", func(t *testing.T) *smtp.Client { return dialSMTP(t, addrs[0].String(), nil, false) }},
		{"starttls", func(t *testing.T) *smtp.Client { return dialSMTP(t, addrs[1].String(), clientTLS, false) }},
		{"implicit", func(t *testing.T) *smtp.Client { return dialSMTP(t, addrs[2].String(), clientTLS, true) }},
	}
	for _, d := range dialers {
		t.Run(d.name, func(t *testing.T) {
			c := d.dial(t)
			if err := c.Mail(testAccount, nil); smtpCode(err) != 530 {
				t.Errorf("MAIL without AUTH: %v, want 530", err)
			}

			c = d.dial(t)
			if err := c.Auth(sasl.NewPlainClient("", testUser, "wrong")); smtpCode(err) != 535 {
				t.Errorf("wrong password: %v, want 535", err)
			}
			if err := c.Mail(testAccount, nil); smtpCode(err) != 530 {
				t.Errorf("MAIL after a failed AUTH: %v, want 530", err)
			}

			c = d.dial(t)
			if err := c.Auth(sasl.NewPlainClient("", "nobody", testPassword)); smtpCode(err) != 535 {
				t.Errorf("unknown user: %v, want 535", err)
			}
			if err := c.Mail(testAccount, nil); smtpCode(err) != 530 {
				t.Errorf("MAIL after AUTH as an unknown user: %v, want 530", err)
			}
		})
	}

	// Commands a client library would not send in this order.
	for i, addr := range addrs[:3] {
		t.Run(fmt.Sprintf("raw listener %d", i), func(t *testing.T) {
			r := rawDial(t, addr.String(), clientTLS, i == 2)
			r.cmd("EHLO printer", "250")
			if i == 1 {
				// Before STARTTLS.
				r.cmd("MAIL FROM:<"+testAccount+">", "530")
				r.cmd("STARTTLS", "220")
				r = r.startTLS(clientTLS)
				r.cmd("EHLO printer", "250")
			}
			r.cmd("MAIL FROM:<"+testAccount+">", "530")
			r.cmd("RCPT TO:<a@example.org>", "5")
			r.cmd("DATA", "5")
			r.cmd("BDAT 5 LAST", "5")
			r.send("hel") // five bytes with the CRLF

			r.cmd("AUTH PLAIN *", "454") // not base64
			r.cmd("MAIL FROM:<"+testAccount+">", "530")
		})
	}

	// A STARTTLS listener takes AUTH only over TLS, unless insecure_auth
	// is set, and STARTTLS then discards a login made before it.
	t.Run("auth before starttls", func(t *testing.T) {
		r := rawDial(t, addrs[1].String(), nil, false)
		r.cmd("EHLO printer", "250")
		r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "523")

		r = rawDial(t, addrs[3].String(), nil, false)
		r.cmd("EHLO printer", "250")
		r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
		r.cmd("STARTTLS", "220")
		r = r.startTLS(clientTLS)
		r.cmd("EHLO printer", "250")
		r.cmd("MAIL FROM:<"+testAccount+">", "530")
	})

	if n := h.Gmail.Conns(); n != 0 {
		t.Errorf("upstream saw %d connections", n)
	}
	if n := len(h.Gmail.Messages()); n != 0 {
		t.Errorf("upstream accepted %d messages", n)
	}
}

func dialSMTP(t *testing.T, addr string, tlsConfig *tls.Config, implicit bool) *smtp.Client {
	t.Helper()
	var c *smtp.Client
	var err error
	switch {
	case tlsConfig == nil:
		c, err = smtp.Dial(addr)
	case implicit:
		c, err = smtp.DialTLS(addr, tlsConfig)
	default:
		c, err = smtp.DialStartTLS(addr, tlsConfig)
	}
	if err != nil {
		t.Fatalf("connecting to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rawDial(t *testing.T, addr string, tlsConfig *tls.Config, implicit bool) *rawConn {
	t.Helper()
	var conn net.Conn
	var err error
	if implicit {
		conn, err = tls.Dial("tcp", addr, tlsConfig)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := &rawConn{t: t, conn: conn}
	r.expect("220")
	return r
}

// startTLS runs the TLS handshake after a 220 to STARTTLS.
func (r *rawConn) startTLS(cfg *tls.Config) *rawConn {
	r.t.Helper()
	tc := tls.Client(r.conn, cfg)
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("TLS handshake after STARTTLS: %v", err)
	}
	return &rawConn{t: r.t, conn: tc}
}

func TestTrustedClientSendsWithoutAuth(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "trusted_clients:\n  - user: " + testUser + "\n"})
	c := h.dial(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send from loopback without AUTH: %v", err)
	}
	m := h.Gmail.WaitMessages(t, 1, 5*time.Second)[0]
	if m.User != testAccount {
		t.Errorf("upstream user = %q, want %q", m.User, testAccount)
	}
	if !strings.Contains(h.logs.String(), "trusted client sends without AUTH") {
		t.Errorf("log does not say the client was trusted:\n%s", h.logs)
	}
}

func TestTrustedClientOnlyListedNetworks(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "trusted_clients:\n  - user: " + testUser +
		"\n    networks: [127.0.0.2/32]\n"})

	// 127.0.0.1 is loopback but not listed.
	c := h.dial(t)
	if err := c.Mail(testAccount, nil); smtpCode(err) != 530 {
		t.Errorf("MAIL from 127.0.0.1: %v, want 530", err)
	}

	c = dialFrom(t, "127.0.0.2", h.addr)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send from the listed 127.0.0.2: %v", err)
	}
	h.Gmail.WaitMessages(t, 1, 5*time.Second)
}

func TestTrustedClientUnknownUserGets4xx(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "trusted_clients:\n  - user: ghost\n"})
	c := h.dial(t)
	err := c.Mail(testAccount, nil)
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 451 {
		t.Fatalf("MAIL for a missing trusted user: %v, want 451", err)
	}
	if !strings.Contains(h.logs.String(), "bridge authorize ghost") {
		t.Errorf("log does not name the fix:\n%s", h.logs)
	}
	if n := h.Gmail.Conns(); n != 0 {
		t.Errorf("upstream saw %d connections", n)
	}
}

// dialFrom connects to addr from the local address ip.
func dialFrom(t *testing.T, ip, addr string) *smtp.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestAllowedSendersEnforced(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	u, err := h.store.User(testUser)
	if err != nil {
		t.Fatal(err)
	}
	u.AllowedSenders = []string{testAccount, "scans@example.com"}
	if err := h.store.PutUser(u); err != nil {
		t.Fatal(err)
	}

	c := h.login(t)
	for _, from := range []string{"boss@example.com", "scanner@example.com.evil.test", ""} {
		err := c.Mail(from, nil)
		se, ok := err.(*smtp.SMTPError)
		if !ok || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
			t.Errorf("MAIL FROM:<%s>: %v, want 550 5.7.1", from, err)
		}
	}
	if n := h.Gmail.Conns(); n != 0 {
		t.Errorf("upstream saw %d connections for rejected senders", n)
	}

	for _, from := range []string{testAccount, "Scans@Example.COM"} {
		if _, err := send(c, from, []string{"a@example.org"}, testMessage); err != nil {
			t.Errorf("send from allowed <%s>: %v", from, err)
		}
	}
	msgs := h.Gmail.WaitMessages(t, 2, 5*time.Second)
	if msgs[1].From != "Scans@Example.COM" {
		t.Errorf("envelope sender = %q, want it unchanged", msgs[1].From)
	}
}

func TestMalformedSASLResponseGets501(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN "+b64("no nul bytes"), "501 5.5.2")
	r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
}

func TestNestedMailRejected(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
	r.cmd("MAIL FROM:<"+testAccount+">", "250")
	r.cmd("MAIL FROM:<other@example.com>", "503 5.5.1")
	r.cmd("RCPT TO:<a@example.org>", "250")
	r.cmd("DATA", "354")
	r.send("Subject: x\r\n\r\nbody\r\n.")
	r.expect("250")
	if n := h.Gmail.Conns(); n != 1 {
		t.Errorf("upstream connections = %d, want 1", n)
	}
	m := h.Gmail.WaitMessages(t, 1, 5*time.Second)[0]
	if m.From != testAccount {
		t.Errorf("envelope sender = %q, want the first MAIL's", m.From)
	}
}
