package proxy

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakegmail"
	"github.com/bridgemail/bridge/internal/fakeoauth"
)

const testMessage = "From: Scanner <scanner@example.com>\r\n" +
	"To: a@example.org, b@example.org\r\n" +
	"Subject: Scan 0001\r\n" +
	"Message-ID: <scan-0001@printer.example>\r\n" +
	"\r\n" +
	"Page one.\r\n" +
	".leading dot survives\r\n" +
	"\r\n" +
	"End.\r\n"

func TestRelayAuthPlain(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	c := h.login(t)

	to := []string{"a@example.org", "b@example.org"}
	reply, err := send(c, testAccount, to, testMessage)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	msgs := h.Gmail.WaitMessages(t, 1, 5*time.Second)
	m := msgs[0]
	if m.From != testAccount {
		t.Errorf("envelope sender = %q", m.From)
	}
	if !slices.Equal(m.To, to) {
		t.Errorf("recipients = %v, want %v", m.To, to)
	}
	if !bytes.Equal(m.Data, []byte(testMessage)) {
		t.Errorf("data differs:\n got %q\nwant %q", m.Data, testMessage)
	}
	if m.User != testAccount {
		t.Errorf("upstream user = %q", m.User)
	}
	// The client sees the upstream's reply text and the session id.
	if !strings.Contains(reply, m.ConnID) || !strings.Contains(reply, "gsmtp") {
		t.Errorf("reply %q lacks the upstream's text", reply)
	}
	if !strings.Contains(reply, "[") {
		t.Errorf("reply %q lacks the session id", reply)
	}
	if !strings.Contains(h.logs.String(), "message_id=<scan-0001@printer.example>") {
		t.Errorf("log lacks the relayed message line:\n%s", h.logs)
	}
}

func TestRelayAuthLogin(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	c := h.dial(t)
	// go-sasl's LOGIN client sends the username as the initial response.
	if err := c.Auth(sasl.NewLoginClient(testUser, testPassword)); err != nil {
		t.Fatalf("AUTH LOGIN: %v", err)
	}
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatal(err)
	}
	m := h.Gmail.WaitMessages(t, 1, 5*time.Second)[0]
	if !bytes.Equal(m.Data, []byte(testMessage)) {
		t.Errorf("data differs: %q", m.Data)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestAuthLoginWithoutInitialResponse(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	if got := r.cmd("AUTH LOGIN", "334 "); got != "334 "+b64("Username:") {
		t.Errorf("challenge = %q", got)
	}
	if got := r.cmd(b64(testUser), "334 "); got != "334 "+b64("Password:") {
		t.Errorf("challenge = %q", got)
	}
	r.cmd(b64(testPassword), "235 ")
	r.cmd("MAIL FROM:<"+testAccount+">", "250")
}

func TestAuthPlainWithoutInitialResponse(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN", "334")
	r.cmd(b64("\x00"+testUser+"\x00"+testPassword), "235 ")
}

func TestAuthPlainOtherIdentityRejected(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN "+b64("admin\x00"+testUser+"\x00"+testPassword), "535 5.7.8")
}

func TestRelayUpstreamStartTLS(t *testing.T) {
	h := newHarness(t, bridgetest.Options{StartTLS: true})
	c := h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatal(err)
	}
	m := h.Gmail.WaitMessages(t, 1, 5*time.Second)[0]
	if !bytes.Equal(m.Data, []byte(testMessage)) {
		t.Errorf("data differs: %q", m.Data)
	}
}

func TestEHLOExtensions(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	reply := r.cmd("EHLO printer", "250")
	var exts []string
	for _, line := range strings.Split(reply, "\n")[1:] {
		exts = append(exts, line[4:])
	}
	want := []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING",
		"AUTH PLAIN LOGIN", "SIZE 35882577", "SMTPUTF8"}
	for _, w := range want {
		if !slices.Contains(exts, w) {
			t.Errorf("EHLO lacks %q: %v", w, exts)
		}
	}
	for _, e := range exts {
		if !slices.Contains(want, e) {
			t.Errorf("EHLO offers %q, which Gmail does not", e)
		}
	}
}

func TestNoAuthGets530(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("MAIL FROM:<"+testAccount+">", "530 5.7.0 Authentication required")
	if n := h.Gmail.Conns(); n != 0 {
		t.Errorf("upstream saw %d connections before AUTH", n)
	}
}

func TestRcptAndDataBeforeAuthGet530(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	c := h.dial(t)
	err := c.Mail(testAccount, nil)
	if smtpCode(err) != 530 {
		t.Errorf("MAIL: %v, want 530", err)
	}
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("RCPT TO:<a@example.org>", "5")
	r.cmd("DATA", "5")
}

func TestWrongPasswordGets535(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	for _, tc := range []struct{ name, user, pass string }{
		{"wrong password", testUser, "wrong"},
		{"unknown user", "nobody", testPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t)
			err := c.Auth(sasl.NewPlainClient("", tc.user, tc.pass))
			se, ok := err.(*smtp.SMTPError)
			if !ok || se.Code != 535 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 8}) {
				t.Fatalf("err = %v, want 535 5.7.8", err)
			}
		})
	}
}

func TestOneRecipientRejectedUpstream(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	h.Gmail.SetRejectRcpt(func(to string) *smtp.SMTPError {
		if to == "bad@example.org" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
				Message: "The email account that you tried to reach does not exist."}
		}
		return nil
	})
	c := h.login(t)
	if err := c.Mail(testAccount, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("bad@example.org", nil)
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) ||
		!strings.Contains(se.Message, "does not exist") {
		t.Fatalf("bad recipient: %v, want upstream's 550 5.1.1", err)
	}
	if err := c.Rcpt("c@example.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(testMessage))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m := h.Gmail.WaitMessages(t, 1, 5*time.Second)[0]
	if !slices.Equal(m.To, []string{"a@example.org", "c@example.org"}) {
		t.Errorf("recipients = %v", m.To)
	}
}

func TestManyMessagesOneRefresh(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	const sessions, perSession = 8, 5
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
				msg := fmt.Sprintf("Subject: %d-%d\r\n\r\nbody\r\n", i, j)
				if _, err := send(c, testAccount, []string{"a@example.org"}, msg); err != nil {
					t.Error(err)
					return
				}
			}
			c.Quit()
		}()
	}
	wg.Wait()
	h.Gmail.WaitMessages(t, sessions*perSession, 10*time.Second)
	if n := h.OAuth.RefreshRequests(); n != 1 {
		t.Errorf("refresh requests = %d, want 1", n)
	}
}

func TestExpiredAccessTokenRefreshed(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	c := h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	// The bridge still holds the token as valid, but upstream now rejects
	// it, as after an early expiry. Pooled connections are dropped so the
	// next message logs in again.
	h.OAuth.ExpireAccessTokens()
	h.waitIdle(t, 1)
	h.srv.pool.discardIdle(testAccount)

	c = h.login(t)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send after expiry: %v", err)
	}
	if n := h.OAuth.RefreshRequests(); n != 2 {
		t.Errorf("refresh requests = %d, want 2", n)
	}
	if n := h.Gmail.AuthFailures(); n != 1 {
		t.Errorf("upstream AUTH failures = %d, want 1", n)
	}
	h.Gmail.WaitMessages(t, 2, 5*time.Second)
}

func TestRevokedConsentGets535WithFix(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	h.OAuth.RevokeAll()
	c := h.login(t)
	err := c.Mail(testAccount, nil)
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 535 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 8}) {
		t.Fatalf("MAIL: %v, want 535 5.7.8", err)
	}
	if !strings.Contains(se.Message, "bridge authorize "+testUser) || !strings.Contains(se.Message, testAccount) {
		t.Errorf("reply %q does not name the account and the fix", se.Message)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "bridge authorize "+testUser) {
		t.Errorf("no error log line naming the fix:\n%s", logs)
	}
	if n := h.Gmail.Conns(); n != 0 {
		t.Errorf("upstream saw %d connections", n)
	}
}

func TestTokenEndpointFaultsGet454(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault fakeoauth.TokenFault
		delay time.Duration
	}{
		{"server error", fakeoauth.ServerError, 0},
		{"broken json", fakeoauth.BrokenJSON, 0},
		{"timeout", fakeoauth.NoFault, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, bridgetest.Options{ExtraYAML: "limits:\n  token_timeout: 500ms\n"})
			h.OAuth.SetTokenFault(tc.fault)
			h.OAuth.SetTokenDelay(tc.delay)
			c := h.login(t)
			err := c.Mail(testAccount, nil)
			se, ok := err.(*smtp.SMTPError)
			if !ok || se.Code != 454 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 0}) {
				t.Fatalf("MAIL: %v, want 454 4.7.0", err)
			}

			// Once the endpoint recovers, the next message goes through.
			h.OAuth.SetTokenFault(fakeoauth.NoFault)
			h.OAuth.SetTokenDelay(0)
			c.Reset()
			if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
				t.Fatalf("send after recovery: %v", err)
			}
		})
	}
}

func TestUpstreamDropMidDataGets4xx(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageDataBody, AfterBytes: 100, Drop: true})
	c := h.login(t)
	body := testMessage + strings.Repeat("line of the body that keeps going\r\n", 2000)
	_, err := send(c, testAccount, []string{"a@example.org"}, body)
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code/100 != 4 {
		t.Fatalf("send: %v, want a 4xx", err)
	}
	if n := len(h.Gmail.Messages()); n != 0 {
		t.Errorf("upstream recorded %d messages", n)
	}

	// The session survives and the next message is delivered.
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("next message: %v", err)
	}
	h.Gmail.WaitMessages(t, 1, 5*time.Second)
}

func TestUpstreamDropAfterFinalDotGets4xx(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Drop: true})
	c := h.login(t)
	_, err := send(c, testAccount, []string{"a@example.org"}, testMessage)
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code/100 != 4 {
		t.Fatalf("send: %v, want a 4xx", err)
	}
}

func TestUpstreamRepliesPassThrough(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stage fakegmail.Stage
		reply *smtp.SMTPError
	}{
		{"daily limit at MAIL", fakegmail.StageMail, fakegmail.DailyLimit},
		{"too big at end of data", fakegmail.StageDataEnd, fakegmail.TooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, bridgetest.Options{})
			h.Gmail.AddFault(fakegmail.Fault{Stage: tc.stage, Reply: tc.reply})
			c := h.login(t)
			_, err := send(c, testAccount, []string{"a@example.org"}, testMessage)
			se, ok := err.(*smtp.SMTPError)
			if !ok || se.Code != tc.reply.Code || se.EnhancedCode != tc.reply.EnhancedCode {
				t.Fatalf("send: %v, want %d %v", err, tc.reply.Code, tc.reply.EnhancedCode)
			}
		})
	}
}

func TestUpstreamRefusedGets4xx(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	h.Gmail.Close()
	c := h.login(t)
	err := c.Mail(testAccount, nil)
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 451 || se.EnhancedCode[1] != 4 {
		t.Fatalf("MAIL: %v, want 451 4.4.x", err)
	}
}

func TestConnectionReusedAcrossSessions(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	for range 3 {
		c := h.login(t)
		if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
			t.Fatal(err)
		}
		c.Quit()
	}
	h.Gmail.WaitMessages(t, 3, 5*time.Second)
	if n := h.Gmail.Conns(); n != 1 {
		t.Errorf("upstream connections = %d, want 1", n)
	}
}

func TestTooManyRecipients(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "limits:\n  max_recipients: 2\n"})
	c := h.login(t)
	if err := c.Mail(testAccount, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := c.Rcpt(fmt.Sprintf("r%d@example.org", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Rcpt("r3@example.org", nil)
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 452 {
		t.Fatalf("third RCPT: %v, want 452", err)
	}
}

func TestRelayBDAT(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
	r.cmd("MAIL FROM:<"+testAccount+">", "250")
	r.cmd("RCPT TO:<a@example.org>", "250")
	first, second := testMessage[:40], testMessage[40:]
	r.send(fmt.Sprintf("BDAT %d", len(first)))
	r.conn.Write([]byte(first))
	r.expect("250")
	r.send(fmt.Sprintf("BDAT %d LAST", len(second)))
	r.conn.Write([]byte(second))
	r.expect("250 2.0.0")
	m := h.Gmail.WaitMessages(t, 1, 5*time.Second)[0]
	if string(m.Data) != testMessage {
		t.Errorf("data = %q", m.Data)
	}
}

func TestBDATAbortedByRSET(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
	r.cmd("MAIL FROM:<"+testAccount+">", "250")
	r.cmd("RCPT TO:<a@example.org>", "250")
	r.send("BDAT 10")
	r.conn.Write([]byte("0123456789"))
	r.expect("250")
	r.cmd("RSET", "250")

	// The aborted message never reaches the upstream, and the session
	// goes on to deliver the next one.
	r.cmd("MAIL FROM:<"+testAccount+">", "250")
	r.cmd("RCPT TO:<a@example.org>", "250")
	r.cmd("DATA", "354")
	r.conn.Write([]byte(strings.ReplaceAll(testMessage, "\r\n.", "\r\n..") + ".\r\n"))
	r.expect("250")
	msgs := h.Gmail.WaitMessages(t, 1, 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	if n := len(h.Gmail.Messages()); n != 1 || string(msgs[0].Data) != testMessage {
		t.Errorf("upstream got %d messages, first %q", n, msgs[0].Data)
	}
}

func TestBDATConnectionClosedMidMessage(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
	r.cmd("MAIL FROM:<"+testAccount+">", "250")
	r.cmd("RCPT TO:<a@example.org>", "250")
	r.send("BDAT 10")
	r.conn.Write([]byte("0123456789"))
	r.expect("250")
	r.conn.Close()

	deadline := time.Now().Add(5 * time.Second)
	for h.srv.Sessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.srv.Sessions(); n != 0 {
		t.Fatalf("%d sessions still open", n)
	}
	if n := len(h.Gmail.Messages()); n != 0 {
		t.Errorf("upstream got %d messages", n)
	}
}

func TestFreshTokenRejectedGets535(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	h.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageAuth, Reply: fakegmail.BadCredentials, Times: fakegmail.Always})
	c := h.login(t)
	err := c.Mail(testAccount, nil)
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 535 {
		t.Fatalf("MAIL: %v, want 535", err)
	}
	if n := h.Gmail.AuthAttempts(); n != 2 {
		t.Errorf("upstream AUTH attempts = %d, want 2 (one retry after a refresh)", n)
	}
	if n := h.OAuth.RefreshRequests(); n != 2 {
		t.Errorf("refresh requests = %d, want 2", n)
	}
	if !strings.Contains(h.logs.String(), "bridge authorize "+testUser) {
		t.Errorf("log does not name the fix:\n%s", h.logs)
	}
}

func TestTooLongLineGetsPermanentReply(t *testing.T) {
	h := newHarness(t, bridgetest.Options{})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
	r.cmd("MAIL FROM:<"+testAccount+">", "250")
	r.cmd("RCPT TO:<a@example.org>", "250")
	r.cmd("DATA", "354")
	r.conn.Write([]byte("Subject: long\r\n\r\n" + strings.Repeat("x", 5000) + "\r\n.\r\n"))
	reply := r.readReply()
	if !strings.HasPrefix(reply, "554 5.6.0") || !strings.Contains(reply, "longer than") {
		t.Errorf("reply = %q, want 554 5.6.0 naming the long line", reply)
	}
	if n := len(h.Gmail.Messages()); n != 0 {
		t.Errorf("upstream got %d messages", n)
	}
}
