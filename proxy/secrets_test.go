package proxy

import (
	"bytes"
	"encoding/base64"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakeoauth"
)

const (
	plantedClientSecret = "GOCSPX-planted-client-secret-4711"
	plantedPassword     = "planted local password 0815"
)

// recordingConn keeps every byte the bridge sent to a client.
type recordingConn struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (c recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// replyRecorder dials the bridge and records the replies of every
// connection it made.
type replyRecorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *replyRecorder) dial(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(recordingConn{Conn: conn, mu: &r.mu, buf: &r.buf})
	t.Cleanup(func() { c.Close() })
	return c
}

func (r *replyRecorder) raw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc := &rawConn{t: t, conn: recordingConn{Conn: conn, mu: &r.mu, buf: &r.buf}}
	rc.expect("220")
	return rc
}

func (r *replyRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

// secretForms returns s with the encodings it could appear in.
func secretForms(s string) []string {
	forms := []string{s}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding,
		base64.URLEncoding, base64.RawURLEncoding} {
		forms = append(forms, enc.EncodeToString([]byte(s)))
	}
	return forms
}

// TestNoSecretInLogsOrReplies runs full sessions at debug level, with the
// protocol trace on, through every AUTH form, a failed and a successful
// upstream login, a refresh, and failures of the token endpoint. Neither
// the log nor any reply may contain a planted secret in any form.
func TestNoSecretInLogsOrReplies(t *testing.T) {
	for _, flavor := range []fakeoauth.Flavor{fakeoauth.Google, fakeoauth.Microsoft} {
		name := map[fakeoauth.Flavor]string{fakeoauth.Google: "google", fakeoauth.Microsoft: "microsoft"}[flavor]
		t.Run(name, func(t *testing.T) {
			env := bridgetest.New(t, bridgetest.Options{Flavor: flavor, ClientSecret: plantedClientSecret})
			h := newHarnessSeeded(t, env, plantedPassword)
			var replies replyRecorder
			runSecretSessions(t, h, &replies)

			logs := h.logs.String()
			if !strings.Contains(logs, `line="AUTH PLAIN`) {
				t.Fatalf("the protocol trace did not run:\n%s", logs)
			}

			var secrets []string
			secrets = append(secrets, secretForms(plantedClientSecret)...)
			secrets = append(secrets, secretForms(plantedPassword)...)
			secrets = append(secrets, secretForms("\x00"+testUser+"\x00"+plantedPassword)...)
			for _, tok := range h.OAuth.RefreshTokens() {
				secrets = append(secrets, secretForms(tok)...)
			}
			tokens := h.OAuth.AccessTokens()
			if len(tokens) < 2 {
				t.Fatalf("the provider issued %d access tokens, want a refresh too", len(tokens))
			}
			for _, tok := range tokens {
				secrets = append(secrets, secretForms(tok)...)
				secrets = append(secrets, tok[:24])
				ir := "user=" + testAccount + "\x01auth=Bearer " + tok + "\x01\x01"
				secrets = append(secrets, secretForms(ir)...)
			}
			for _, s := range secrets {
				if strings.Contains(logs, s) {
					t.Errorf("log contains the secret %q", s)
				}
				if strings.Contains(replies.String(), s) {
					t.Errorf("a reply contains the secret %q", s)
				}
			}
		})
	}
}

// newHarnessSeeded is newHarnessEnv with the test user's password set to
// password.
func newHarnessSeeded(t *testing.T, env *bridgetest.Env, password string) *harness {
	t.Helper()
	h := newHarnessEnv(t, env)
	u, err := h.store.User(testUser)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := auth.HashPassword(password)
	if err != nil {
		t.Fatal(err)
	}
	u.PasswordHash = hash
	if err := h.store.PutUser(u); err != nil {
		t.Fatal(err)
	}
	return h
}

func runSecretSessions(t *testing.T, h *harness, replies *replyRecorder) {
	t.Helper()
	plain := b64("\x00" + testUser + "\x00" + plantedPassword)

	// Wrong passwords close to the planted one.
	for _, wrong := range []string{plantedPassword + "x", strings.ToUpper(plantedPassword)} {
		c := replies.dial(t, h.addr)
		if err := c.Auth(sasl.NewPlainClient("", testUser, wrong)); smtpCode(err) != 535 {
			t.Fatalf("wrong password: %v, want 535", err)
		}
	}

	// AUTH PLAIN with an initial response, then a message.
	c := replies.dial(t, h.addr)
	if err := c.Auth(sasl.NewPlainClient("", testUser, plantedPassword)); err != nil {
		t.Fatalf("AUTH PLAIN: %v", err)
	}
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send: %v", err)
	}

	// AUTH PLAIN and LOGIN without initial responses.
	r := replies.raw(t, h.addr)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN", "334")
	r.cmd(plain, "235")
	r = replies.raw(t, h.addr)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH LOGIN", "334")
	r.cmd(b64(testUser), "334")
	r.cmd(b64(plantedPassword), "235")
	r.cmd("MAIL FROM:<"+testAccount+">", "250")
	r.cmd("RCPT TO:<a@example.org>", "250")
	r.cmd("DATA", "354")
	r.send("Subject: the password is " + plantedPassword + "\r\n\r\nbody\r\n.")
	r.expect("250")

	// The upstream rejects the cached access token: a refresh and a
	// second login follow.
	c.Reset()
	h.waitNoneInUse(t)
	h.OAuth.ExpireAccessTokens()
	h.srv.pool.discardIdle(testAccount)
	if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err != nil {
		t.Fatalf("send after the token expired: %v", err)
	}

	// The token endpoint fails: its errors reach the log and the client.
	for _, fault := range []fakeoauth.TokenFault{fakeoauth.ServerError, fakeoauth.BrokenJSON, fakeoauth.InvalidGrant} {
		// The reply to RSET comes after the last connection went back
		// to the pool, so the pool is emptied after it.
		c.Reset()
		h.waitNoneInUse(t)
		h.OAuth.SetTokenFault(fault)
		h.tokens.Forget(testAccount)
		h.srv.pool.discardIdle(testAccount)
		if _, err := send(c, testAccount, []string{"a@example.org"}, testMessage); err == nil {
			t.Fatalf("token fault %v: send succeeded", fault)
		}
	}
	h.OAuth.SetTokenFault(fakeoauth.NoFault)
	h.Gmail.WaitMessages(t, 3, 5*time.Second)
}
