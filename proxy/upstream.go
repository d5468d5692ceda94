package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
)

// upstream is an authenticated connection to a provider's submission
// server, sending as one account.
type upstream struct {
	client *smtp.Client
	// conn is the TLS connection that client uses, and raw the TCP
	// connection under it.
	conn    net.Conn
	raw     net.Conn
	account string
	prov    *auth.Provider
	created time.Time
	// used counts the transactions sent on the connection, and reused
	// is set when the pool hands it out again.
	used   int
	reused bool
}

func (u *upstream) close() {
	// QUIT waits for a reply; a connection being dropped gets a short one.
	u.conn.SetDeadline(time.Now().Add(2 * time.Second))
	u.client.Quit()
	u.client.Close()
}

// dialer opens and authenticates upstream connections.
type dialer struct {
	tokens *auth.Tokens
	// limits returns the current limits, which a reload may change.
	limits   func() config.Limits
	hostname string
	log      *slog.Logger
}

// authRejectedError is the submission server's rejection of a fresh
// access token.
type authRejectedError struct {
	account string
	reply   *smtp.SMTPError
	// challenge is Gmail's JSON error challenge, if it sent one.
	challenge *auth.XOAuth2Challenge
}

func (e *authRejectedError) Error() string {
	s := "upstream rejected the access token of " + e.account + ": " + e.reply.Error()
	if e.challenge != nil {
		s += fmt.Sprintf(" (status %s, scope %s)", e.challenge.Status, e.challenge.Scope)
	}
	return s
}

func (e *authRejectedError) Unwrap() error { return e.reply }

// smtpAuthDisabled is the enhanced status code with which Exchange Online
// rejects AUTH when SMTP AUTH is disabled for the mailbox or the tenant.
var smtpAuthDisabled = smtp.EnhancedCode{5, 7, 139}

// authDisabledError is a login that the provider rejects for the mailbox
// rather than for the token.
type authDisabledError struct {
	account string
	reply   *smtp.SMTPError
}

func (e *authDisabledError) Error() string {
	return "upstream has SMTP AUTH disabled for " + e.account + ": " + e.reply.Error()
}

func (e *authDisabledError) Unwrap() error { return e.reply }

// connect dials the provider's submission server and authenticates as
// account. When the server rejects the access token with 535, the token
// is refreshed and the login retried once on a new connection, because
// go-smtp's client sends "*" after a failed AUTH.
func (d *dialer) connect(ctx context.Context, p *auth.Provider, account string) (*upstream, error) {
	for attempt := 0; ; attempt++ {
		token, err := d.tokens.AccessToken(ctx, p.Name, account)
		if err != nil {
			return nil, err
		}

		u, err := d.dial(ctx, p)
		if err != nil {
			return nil, err
		}
		u.account = account
		u.prov = p

		xo := &auth.XOAuth2Client{User: account, Token: token}
		err = u.client.Auth(xo)
		if err == nil {
			return u, nil
		}
		u.client.Close()

		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 535 {
			return nil, fmt.Errorf("authenticating upstream as %s: %w", account, err)
		}
		if se.EnhancedCode == smtpAuthDisabled {
			// Exchange Online refuses SMTP AUTH for the mailbox or the
			// tenant; a new token would be refused the same way.
			return nil, &authDisabledError{account: account, reply: se}
		}
		d.tokens.Invalidate(account, token)
		if attempt == 1 {
			return nil, &authRejectedError{account: account, reply: se, challenge: xo.Challenge}
		}
		loggerFrom(ctx, d.log).Warn("upstream rejected the access token; refreshing and retrying once",
			"account", account, "reply", se.Error())
	}
}

// dial connects to the submission server with the provider's TLS mode and
// sends EHLO.
func (d *dialer) dial(ctx context.Context, p *auth.Provider) (*upstream, error) {
	addr := p.Upstream.Address
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("upstream address %q: %w", addr, err)
	}
	serverName := p.Upstream.ServerName
	if serverName == "" {
		serverName = host
	}
	tlsConfig := &tls.Config{
		ServerName: serverName,
		RootCAs:    p.RootCAs,
		MinVersion: tls.VersionTLS12,
	}

	limits := d.limits()
	dialCtx, cancel := context.WithTimeout(ctx, limits.DialTimeout)
	defer cancel()
	var nd net.Dialer
	conn, err := nd.DialContext(dialCtx, "tcp", addr)
	if err != nil {
		return nil, &upstreamError{op: "connecting to " + addr, err: err}
	}
	raw := conn

	// The greeting, STARTTLS and the handshake share the dial deadline.
	conn.SetDeadline(time.Now().Add(limits.DialTimeout))
	if p.Upstream.TLS == config.TLSStartTLS {
		if err := startTLS(conn, d.hostname); err != nil {
			conn.Close()
			return nil, &upstreamError{op: "starting TLS with " + addr, err: err}
		}
	}
	tc := tls.Client(conn, tlsConfig)
	if err := tc.HandshakeContext(dialCtx); err != nil {
		conn.Close()
		return nil, &upstreamError{op: "TLS handshake with " + addr, err: err}
	}
	conn = tc
	if tracing(d.log) {
		conn = newTracedConn(conn, d.log.With("upstream", addr), false)
	}

	// go-smtp's client reads a greeting first, with the command timeout.
	// It gets a stand-in instead: after STARTTLS the server sends no
	// greeting, and on the implicit TLS port the greeting is read here so
	// that the dial deadline bounds it.
	rest := io.Reader(conn)
	if p.Upstream.TLS == config.TLSImplicit {
		br := bufio.NewReader(conn)
		if _, _, err := textproto.NewReader(br).ReadResponse(220); err != nil {
			conn.Close()
			return nil, &upstreamError{op: "greeting from " + addr, err: smtpReply(err)}
		}
		rest = br
	}
	conn.SetDeadline(time.Time{})
	c := smtp.NewClient(&greetedConn{Conn: conn, r: io.MultiReader(strings.NewReader("220 greeted\r\n"), rest)})

	c.CommandTimeout = limits.UpstreamTimeout
	c.SubmissionTimeout = limits.UpstreamDataTimeout
	if err := c.Hello(d.hostname); err != nil {
		c.Close()
		return nil, &upstreamError{op: "greeting " + addr, err: err}
	}
	return &upstream{client: c, conn: conn, raw: raw, created: time.Now()}, nil
}

// startTLS reads the greeting, sends EHLO and STARTTLS on conn, and
// returns when the server is ready for the TLS handshake. It is written
// here because go-smtp's client does not export its STARTTLS step.
func startTLS(conn net.Conn, hostname string) error {
	text := textproto.NewConn(conn)
	if _, _, err := text.ReadResponse(220); err != nil {
		return smtpReply(err)
	}
	if err := text.PrintfLine("EHLO %s", hostname); err != nil {
		return err
	}
	_, ext, err := text.ReadResponse(250)
	if err != nil {
		return smtpReply(err)
	}
	if !hasExtension(ext, "STARTTLS") {
		return errors.New("server does not offer STARTTLS")
	}
	if err := text.PrintfLine("STARTTLS"); err != nil {
		return err
	}
	if _, _, err := text.ReadResponse(220); err != nil {
		return smtpReply(err)
	}
	return nil
}

func hasExtension(ehlo, name string) bool {
	for _, line := range strings.Split(ehlo, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.EqualFold(f[0], name) {
			return true
		}
	}
	return false
}

// smtpReply turns a textproto reply error into an *smtp.SMTPError with
// its enhanced status code, as go-smtp's client does.
func smtpReply(err error) error {
	var te *textproto.Error
	if !errors.As(err, &te) {
		return err
	}
	reply := &smtp.SMTPError{Code: te.Code, Message: te.Msg}
	first, rest, ok := strings.Cut(te.Msg, " ")
	parts := strings.Split(first, ".")
	if !ok || len(parts) != 3 {
		return reply
	}
	for i, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil {
			return reply
		}
		reply.EnhancedCode[i] = n
	}
	// Each line of a multi-line reply repeats the enhanced code (RFC
	// 2034); the message keeps it once.
	reply.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	return reply
}

// greetedConn reads from r, which returns a stand-in greeting and then
// the rest of the connection's data.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (c *greetedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// upstreamGone reports whether err leaves the upstream connection unusable:
// a transport error, or a 421 reply, after which the server closes it.
func upstreamGone(err error) bool {
	var se *smtp.SMTPError
	return !errors.As(err, &se) || se.Code == 421
}

// upstreamError is a failure to reach or keep the submission server.
type upstreamError struct {
	op  string
	err error
}

func (e *upstreamError) Error() string { return e.op + ": " + e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }
