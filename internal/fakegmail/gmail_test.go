package fakegmail

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bridgemail/bridge/internal/testcert"
	"github.com/emersion/go-smtp"
)

func TestStartTLSHidesAuthBeforeTLS(t *testing.T) {
	s := Start(t, Options{CheckToken: tokenFor})
	r := dialRaw(t, s)

	greeting := r.reply()
	if !strings.HasPrefix(greeting[0], "220 smtp.gmail.com ESMTP ") ||
		!strings.HasSuffix(greeting[0], " - gsmtp") {
		t.Errorf("greeting = %q", greeting)
	}
	ehlo := r.cmd("EHLO printer")
	want := []string{
		"250-smtp.gmail.com at your service, [127.0.0.1]",
		"250-SIZE 35882577", "250-8BITMIME", "250-STARTTLS",
		"250-ENHANCEDSTATUSCODES", "250-PIPELINING", "250-CHUNKING",
		"250 SMTPUTF8",
	}
	if !slices.Equal(ehlo, want) {
		t.Errorf("EHLO before TLS = %q, want %q", ehlo, want)
	}

	auth := r.cmd("AUTH XOAUTH2 dXNlcj1h")
	if !strings.HasPrefix(auth[0], "530 5.7.0 Must issue a STARTTLS command first. ") ||
		!strings.HasSuffix(auth[0], " - gsmtp") {
		t.Errorf("AUTH before STARTTLS = %q", auth)
	}
	mail := r.cmd("MAIL FROM:<a@example.com>")
	if !strings.HasPrefix(mail[0], "530 5.7.0 Must issue a STARTTLS command first.") {
		t.Errorf("MAIL before STARTTLS = %q", mail)
	}

	r.startTLS(s)
	ehlo = r.cmd("EHLO printer")
	if !slices.Contains(ehlo, "250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH") {
		t.Errorf("EHLO after TLS has no AUTH: %q", ehlo)
	}
	if slices.Contains(ehlo, "250-STARTTLS") {
		t.Errorf("EHLO after TLS offers STARTTLS: %q", ehlo)
	}
}

func TestImplicitTLSOffersAuth(t *testing.T) {
	s := Start(t, Options{TLS: ImplicitTLS, CheckToken: tokenFor})
	c := dialClient(t, s)
	if err := c.Hello("printer"); err != nil {
		t.Fatal(err)
	}
	if !c.SupportsAuth("XOAUTH2") {
		t.Error("XOAUTH2 not offered over implicit TLS")
	}
	if size, ok := c.MaxMessageSize(); !ok || size != DefaultMaxMessageBytes {
		t.Errorf("SIZE = %d, %v", size, ok)
	}
}

func TestXOAUTH2AcceptedAndMessagesRecorded(t *testing.T) {
	s := Start(t, Options{CheckToken: tokenFor})
	c := dialClient(t, s)

	if err := c.Auth(&xoauth2Client{user: "alice@example.com", token: "token-for-alice@example.com"}); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	body := "Subject: one\r\n\r\n.leading dot\r\nend\r\n"
	if err := c.SendMail("alice@example.com", []string{"bob@example.org", "carol@example.org"},
		strings.NewReader(body)); err != nil {
		t.Fatalf("first message: %v", err)
	}
	if err := c.Reset(); err != nil {
		t.Fatalf("RSET: %v", err)
	}
	if err := c.SendMail("alice@example.com", []string{"dave@example.org"},
		strings.NewReader("Subject: two\r\n\r\nx\r\n")); err != nil {
		t.Fatalf("second message on the same connection: %v", err)
	}

	msgs := s.WaitMessages(t, 2, 5*time.Second)
	if got := string(msgs[0].Data); got != body {
		t.Errorf("data = %q, want %q", got, body)
	}
	if msgs[0].User != "alice@example.com" || msgs[0].From != "alice@example.com" {
		t.Errorf("user, from = %q, %q", msgs[0].User, msgs[0].From)
	}
	if !slices.Equal(msgs[0].To, []string{"bob@example.org", "carol@example.org"}) {
		t.Errorf("to = %q", msgs[0].To)
	}
	if msgs[0].MailOptions.Body != smtp.Body8BitMIME {
		t.Errorf("BODY = %q, want 8BITMIME", msgs[0].MailOptions.Body)
	}
	if !slices.Equal(msgs[1].To, []string{"dave@example.org"}) {
		t.Errorf("second to = %q", msgs[1].To)
	}
	if s.Conns() != 1 || s.AuthAttempts() != 1 || s.AuthFailures() != 0 {
		t.Errorf("conns, auth attempts, failures = %d, %d, %d; want 1, 1, 0",
			s.Conns(), s.AuthAttempts(), s.AuthFailures())
	}
}

func TestGmailReplyWording(t *testing.T) {
	s := Start(t, Options{TLS: ImplicitTLS, CheckToken: tokenFor})
	r := dialRaw(t, s)
	r.reply()
	r.cmd("EHLO printer")

	ir := base64.StdEncoding.EncodeToString([]byte("user=a@example.com\x01auth=Bearer token-for-a@example.com\x01\x01"))
	steps := []struct{ cmd, prefix string }{
		{"AUTH XOAUTH2 " + ir, "235 2.7.0 Accepted"},
		{"MAIL FROM:<a@example.com>", "250 2.1.0 OK "},
		{"RCPT TO:<b@example.com>", "250 2.1.5 OK "},
		{"DATA", "354  Go ahead "},
		{"x\r\n.", "250 2.0.0 OK "},
		{"RSET", "250 2.1.5 Flushed "},
		{"QUIT", "221 2.0.0 closing connection "},
	}
	for _, step := range steps {
		got := r.cmd(step.cmd)
		if !strings.HasPrefix(got[0], step.prefix) {
			t.Errorf("%q: reply %q, want prefix %q", step.cmd, got, step.prefix)
		}
		if step.prefix[:3] != "235" && !strings.HasSuffix(got[0], " - gsmtp") {
			t.Errorf("%q: reply %q has no gsmtp id", step.cmd, got)
		}
	}
}

func TestBadTokenGetsJSONThen535(t *testing.T) {
	s := Start(t, Options{TLS: ImplicitTLS, CheckToken: tokenFor})
	r := dialRaw(t, s)
	r.reply()
	r.cmd("EHLO printer")

	ir := base64.StdEncoding.EncodeToString([]byte("user=a@example.com\x01auth=Bearer stale\x01\x01"))
	challenge := r.cmd("AUTH XOAUTH2 " + ir)
	if len(challenge) != 1 || !strings.HasPrefix(challenge[0], "334 ") {
		t.Fatalf("reply to bad token = %q, want a 334 challenge", challenge)
	}
	raw, err := base64.StdEncoding.DecodeString(challenge[0][4:])
	if err != nil {
		t.Fatalf("decoding challenge: %v", err)
	}
	var body map[string]string
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("challenge %q is not JSON: %v", raw, err)
	}
	if body["status"] != "400" || body["schemes"] != "Bearer" || body["scope"] != "https://mail.google.com/" {
		t.Errorf("challenge = %v", body)
	}

	final := r.cmd("")
	if len(final) != 2 {
		t.Fatalf("final reply = %q, want two lines", final)
	}
	if final[0] != "535-5.7.8 Username and Password not accepted. For more information, go to" {
		t.Errorf("first line = %q", final[0])
	}
	if !strings.HasPrefix(final[1], "535 5.7.8 https://support.google.com/mail/?p=BadCredentials ") ||
		!strings.HasSuffix(final[1], " - gsmtp") {
		t.Errorf("last line = %q", final[1])
	}
	if s.AuthAttempts() != 1 || s.AuthFailures() != 1 {
		t.Errorf("auth attempts, failures = %d, %d; want 1, 1", s.AuthAttempts(), s.AuthFailures())
	}
}

func TestBadTokenThroughGoSMTPClient(t *testing.T) {
	s := Start(t, Options{CheckToken: tokenFor})
	c := dialClient(t, s)
	client := &xoauth2Client{user: "a@example.com", token: "stale"}

	err := c.Auth(client)
	if code := smtpCode(t, err); code != 535 {
		t.Errorf("AUTH error code = %d, want 535", code)
	}
	if len(client.challenges) != 1 || !strings.Contains(client.challenges[0], `"status":"400"`) {
		t.Errorf("challenges = %q", client.challenges)
	}
}

func TestTwoStepXOAUTH2WithLongToken(t *testing.T) {
	long := strings.Repeat("t", 1800)
	s := Start(t, Options{CheckToken: func(user, token string) bool { return token == long }})
	c := dialClient(t, s)
	if err := c.Auth(&xoauth2Client{user: "a@example.com", token: long}); err != nil {
		t.Fatalf("AUTH with a %d-byte token: %v", len(long), err)
	}
}

func TestMailBeforeAuthRejected(t *testing.T) {
	s := Start(t, Options{CheckToken: tokenFor})
	c := dialClient(t, s)
	err := c.Mail("a@example.com", nil)
	if code := smtpCode(t, err); code != 530 {
		t.Errorf("MAIL before AUTH code = %d, want 530", code)
	}
}

func TestSizeOverLimitRejected(t *testing.T) {
	s := Start(t, Options{CheckToken: tokenFor, MaxMessageBytes: 100})
	c := dialClient(t, s)
	if err := c.Auth(&xoauth2Client{user: "a@example.com", token: "token-for-a@example.com"}); err != nil {
		t.Fatal(err)
	}

	err := c.Mail("a@example.com", &smtp.MailOptions{Size: 101})
	if code := smtpCode(t, err); code != 552 {
		t.Errorf("MAIL SIZE=101 code = %d, want 552", code)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	err = c.SendMail("a@example.com", []string{"b@example.com"}, strings.NewReader(strings.Repeat("x", 200)+"\r\n"))
	if code := smtpCode(t, err); code != 552 {
		t.Errorf("oversized DATA code = %d, want 552", code)
	}
}

func TestBDATRecorded(t *testing.T) {
	s := Start(t, Options{TLS: ImplicitTLS, CheckToken: tokenFor})
	r := dialRaw(t, s)
	r.reply()
	r.cmd("EHLO printer")
	ir := base64.StdEncoding.EncodeToString([]byte("user=a@example.com\x01auth=Bearer token-for-a@example.com\x01\x01"))
	r.cmd("AUTH XOAUTH2 " + ir)
	r.cmd("MAIL FROM:<a@example.com>")
	r.cmd("RCPT TO:<b@example.com>")

	chunk := "Subject: b\r\n\r\n.no stuffing\r\n"
	if got := r.cmd("BDAT " + strconv.Itoa(len(chunk)) + " LAST\r\n" + strings.TrimSuffix(chunk, "\r\n")); !strings.HasPrefix(got[0], "250 ") {
		t.Fatalf("BDAT reply = %q", got)
	}
	msgs := s.WaitMessages(t, 1, 5*time.Second)
	if string(msgs[0].Data) != chunk {
		t.Errorf("data = %q, want %q", msgs[0].Data, chunk)
	}
}

func TestUntrustedCertificateFailsHandshake(t *testing.T) {
	s := Start(t, Options{Certs: testcert.NewUntrusted(t), CheckToken: tokenFor})
	trusted := testcert.New(t)

	c, err := smtp.DialStartTLS(s.Addr(), trusted.ClientTLS("localhost"))
	if err == nil {
		// The client runs EHLO and STARTTLS with its first command.
		err = c.Hello("printer")
		c.Close()
	}
	if err == nil {
		t.Fatal("STARTTLS verified a certificate from another CA")
	}
	if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("error = %v, want a certificate error", err)
	}
}

func TestDiscardDataKeepsEnvelope(t *testing.T) {
	s := Start(t, Options{CheckToken: tokenFor, DiscardData: true})
	c := dialClient(t, s)
	if err := c.Auth(&xoauth2Client{user: "alice@example.com", token: "token-for-alice@example.com"}); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := c.SendMail("alice@example.com", []string{"bob@example.org"},
		strings.NewReader("Subject: one\r\n\r\nbody\r\n")); err != nil {
		t.Fatalf("send: %v", err)
	}
	m := s.WaitMessages(t, 1, 5*time.Second)[0]
	if m.Data != nil {
		t.Errorf("data = %q, want none", m.Data)
	}
	if m.From != "alice@example.com" || !slices.Equal(m.To, []string{"bob@example.org"}) {
		t.Errorf("envelope = %q %q", m.From, m.To)
	}
}
