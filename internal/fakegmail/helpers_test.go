package fakegmail

import (
	"crypto/tls"
	"errors"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// xoauth2Client is a minimal SASL XOAUTH2 client. It answers an error
// challenge with the empty response and records the challenge.
type xoauth2Client struct {
	user, token string
	challenges  []string
}

func (c *xoauth2Client) Start() (string, []byte, error) {
	ir := "user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"
	return "XOAUTH2", []byte(ir), nil
}

func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	if len(c.challenges) > 0 {
		return nil, errors.New("second XOAUTH2 challenge")
	}
	c.challenges = append(c.challenges, string(challenge))
	return []byte{}, nil
}

// tokenFor is a CheckToken that accepts "token-for-" + user.
func tokenFor(user, token string) bool {
	return token == "token-for-"+user
}

// dialClient connects go-smtp's client to s, with STARTTLS or implicit TLS
// as the server expects.
func dialClient(t *testing.T, s *Server) *smtp.Client {
	t.Helper()
	cfg := s.ClientTLS("127.0.0.1")
	var c *smtp.Client
	var err error
	if s.opts.TLS == ImplicitTLS {
		c, err = smtp.DialTLS(s.Addr(), cfg)
	} else {
		c, err = smtp.DialStartTLS(s.Addr(), cfg)
	}
	if err != nil {
		t.Fatalf("connecting to fake: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawClient speaks SMTP line by line, so tests can check the exact wire
// text.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	text *textproto.Conn
}

func dialRaw(t *testing.T, s *Server) *rawClient {
	t.Helper()
	var conn net.Conn
	var err error
	if s.opts.TLS == ImplicitTLS {
		conn, err = tls.Dial("tcp", s.Addr(), s.ClientTLS("localhost"))
	} else {
		conn, err = net.Dial("tcp", s.Addr())
	}
	if err != nil {
		t.Fatalf("connecting to fake: %v", err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, text: textproto.NewConn(conn)}
}

// reply reads one reply and returns its lines.
func (r *rawClient) reply() []string {
	r.t.Helper()
	var lines []string
	for {
		line, err := r.text.ReadLine()
		if err != nil {
			r.t.Fatalf("reading reply after %q: %v", lines, err)
		}
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return lines
		}
	}
}

// cmd sends line and returns the reply.
func (r *rawClient) cmd(line string) []string {
	r.t.Helper()
	if err := r.text.PrintfLine("%s", line); err != nil {
		r.t.Fatalf("sending %q: %v", line, err)
	}
	return r.reply()
}

// startTLS upgrades the connection after STARTTLS.
func (r *rawClient) startTLS(s *Server) {
	r.t.Helper()
	if got := r.cmd("STARTTLS"); !strings.HasPrefix(got[0], "220 ") {
		r.t.Fatalf("STARTTLS reply = %q", got)
	}
	tc := tls.Client(r.conn, s.ClientTLS("localhost"))
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("TLS handshake: %v", err)
	}
	r.conn = tc
	r.text = textproto.NewConn(tc)
}

// expectClosed checks that the server closed the connection.
func (r *rawClient) expectClosed() {
	r.t.Helper()
	if line, err := r.text.ReadLine(); err == nil {
		r.t.Fatalf("read %q, want the connection closed", line)
	}
}

func smtpCode(t *testing.T, err error) int {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not *smtp.SMTPError", err, err)
	}
	return se.Code
}
