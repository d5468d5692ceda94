// Package fakegmail is a fake SMTP submission server for tests, built on
// go-smtp. It behaves as smtp.gmail.com or smtp.office365.com do towards an
// OAuth client: EHLO capabilities, STARTTLS (RFC 3207) or implicit TLS
// (RFC 8314), SASL XOAUTH2 and their reply wording, and it records every
// message it accepts. Faults can be injected at each stage of a session.
//
// The server listens on 127.0.0.1 only.
package fakegmail

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bridgemail/bridge/internal/testcert"
	"github.com/emersion/go-smtp"
)

// Flavor selects whose wording and behaviour the server copies.
type Flavor int

const (
	// Gmail is smtp.gmail.com.
	Gmail Flavor = iota
	// Microsoft is smtp.office365.com.
	Microsoft
)

// TLSMode selects how the client gets to TLS.
type TLSMode int

const (
	// StartTLS is port 587: plaintext greeting, AUTH and MAIL only after
	// STARTTLS. The zero value.
	StartTLS TLSMode = iota
	// ImplicitTLS is port 465: TLS from the first byte, AUTH offered at once.
	ImplicitTLS
)

// DefaultMaxMessageBytes is the SIZE that smtp.gmail.com advertises.
const DefaultMaxMessageBytes = 35882577

// Options configures a Server. The zero value is a Gmail server on the
// STARTTLS port that rejects every token.
type Options struct {
	Flavor Flavor
	// TLS is StartTLS unless set. Microsoft supports StartTLS only.
	TLS TLSMode
	// Certs supplies the server certificate. Nil means testcert.New.
	Certs *testcert.Certs
	// CheckToken reports whether token is a valid access token for user.
	// Nil rejects every token. It may be called concurrently.
	CheckToken func(user, token string) bool
	// RejectRcpt, if set, returns the reply for a recipient, or nil to
	// accept it. It may be called concurrently.
	RejectRcpt func(to string) *smtp.SMTPError
	// MaxMessageBytes is the advertised SIZE and the enforced limit.
	// Zero means DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// Domain is the host name in the greeting and EHLO reply. Empty means
	// smtp.gmail.com or smtp.office365.com.
	Domain string
	// DiscardData makes the server read the data of each message without
	// keeping it: Message.Data stays nil. A benchmark sets it, so that a
	// long run does not hold every message in memory.
	DiscardData bool
	// ReadTimeout is how long the server waits for the next command
	// before it replies 421 and closes the connection, as servers do
	// with idle connections. Zero means one minute.
	ReadTimeout time.Duration
	// Trace, if set, receives every line on the wire, prefixed with "C:"
	// (client) or "S:" (server) and the connection id. The AUTH lines
	// contain tokens.
	Trace io.Writer
}

// Message is one message the server accepted.
type Message struct {
	// ConnID is the id that the server's replies on that connection carry.
	ConnID string
	// User is the account the session authenticated as.
	User string
	// From is the envelope sender and To the recipients, in RCPT order.
	From string
	To   []string
	// Data is the message as sent after DATA or in BDAT chunks, with dot
	// stuffing removed and CRLF line endings kept.
	Data []byte
	// MailOptions are the parameters of the MAIL command.
	MailOptions smtp.MailOptions
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	opts      Options
	tlsConfig *tls.Config
	smtp      *smtp.Server
	ln        net.Listener
	done      chan struct{}

	mu           sync.Mutex
	certs        *testcert.Certs
	messages     []Message
	arrived      chan struct{} // closed and replaced when a message arrives
	faults       []*Fault
	rejectRcpt   func(string) *smtp.SMTPError
	conns        int
	authAttempts int
	authFailures int
}

// Start runs a server on 127.0.0.1 with an ephemeral port until the test
// ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Certs == nil {
		opts.Certs = testcert.New(t)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("fakegmail: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New runs a server on 127.0.0.1 with an ephemeral port until Close, for
// programs outside tests such as a benchmark. opts.Certs is required.
func New(opts Options) (*Server, error) {
	if opts.Certs == nil {
		return nil, errors.New("Options.Certs is required")
	}
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.Domain == "" {
		opts.Domain = "smtp.gmail.com"
		if opts.Flavor == Microsoft {
			opts.Domain = "smtp.office365.com"
		}
	}
	if opts.Flavor == Microsoft && opts.TLS != StartTLS {
		return nil, errors.New("the Microsoft flavour supports StartTLS only")
	}

	s := &Server{
		opts:       opts,
		certs:      opts.Certs,
		done:       make(chan struct{}),
		arrived:    make(chan struct{}),
		rejectRcpt: opts.RejectRcpt,
	}
	// The certificate is looked up at each handshake, so SetCerts can
	// swap it while clients are connected.
	s.tlsConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			return &s.certs.Leaf, nil
		},
	}
	s.smtp = smtp.NewServer(smtp.BackendFunc(s.newSession))
	s.smtp.Domain = opts.Domain
	s.smtp.MaxMessageBytes = opts.MaxMessageBytes
	// conn does TLS itself, so go-smtp must allow AUTH on what it sees as
	// a plain connection. The session rejects AUTH before TLS.
	s.smtp.AllowInsecureAuth = true
	s.smtp.EnableSMTPUTF8 = true
	s.smtp.EnableDSN = opts.Flavor == Microsoft
	s.smtp.EnableBINARYMIME = opts.Flavor == Microsoft
	// RFC 4954 lets a SASL response line reach 12288 octets, which a
	// Microsoft access token needs. go-smtp's default is 2000.
	s.smtp.MaxLineLength = 12288
	s.smtp.ReadTimeout = time.Minute
	if opts.ReadTimeout > 0 {
		s.smtp.ReadTimeout = opts.ReadTimeout
	}
	s.smtp.ErrorLog = log.New(io.Discard, "", 0)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening: %w", err)
	}
	s.ln = ln
	go s.smtp.Serve(&listener{Listener: ln, srv: s})
	return s, nil
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Certs returns the certificates the server was started with. Their
// CAFile is what clients are configured to trust.
func (s *Server) Certs() *testcert.Certs { return s.opts.Certs }

// SetCerts makes later TLS handshakes present the leaf of c, such as one
// from testcert.NewUntrusted to model a certificate that does not verify.
// Nil restores the certificates the server was started with.
func (s *Server) SetCerts(c *testcert.Certs) {
	if c == nil {
		c = s.opts.Certs
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certs = c
}

// ClientTLS returns a client configuration that trusts the server's
// certificate for serverName, which must be one of testcert.Hosts.
func (s *Server) ClientTLS(serverName string) *tls.Config {
	return s.opts.Certs.ClientTLS(serverName)
}

// Close stops the server and closes every connection. Start registers it
// with t.Cleanup; calling it again does nothing.
func (s *Server) Close() {
	select {
	case <-s.done:
		return
	default:
		close(s.done)
	}
	s.smtp.Close()
}

// Messages returns a copy of the messages accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// WaitMessages waits until at least n messages have arrived and returns
// them. It calls t.Fatal after timeout.
func (s *Server) WaitMessages(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		msgs := append([]Message(nil), s.messages...)
		arrived := s.arrived
		s.mu.Unlock()
		if len(msgs) >= n {
			return msgs
		}
		select {
		case <-arrived:
		case <-deadline.C:
			t.Fatalf("fakegmail: %d of %d messages arrived within %v", len(msgs), n, timeout)
		}
	}
}

// Conns returns the number of TCP connections accepted.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// AuthAttempts returns the number of AUTH commands received.
func (s *Server) AuthAttempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authAttempts
}

// AuthFailures returns the number of AUTH commands that did not succeed:
// rejected credentials, AUTH before TLS, unsupported mechanisms and faults.
func (s *Server) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFailures
}

// SetRejectRcpt replaces Options.RejectRcpt. Nil accepts every recipient.
func (s *Server) SetRejectRcpt(f func(to string) *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejectRcpt = f
}

func (s *Server) addMessage(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = append(s.messages, m)
	close(s.arrived)
	s.arrived = make(chan struct{})
}

func (s *Server) countAuth(failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authAttempts++
	if failed {
		s.authFailures++
	}
}

func (s *Server) countAuthFailure() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authFailures++
}

// sleep waits for d and returns false if the server closed meanwhile.
func (s *Server) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-s.done:
		return false
	}
}

func (s *Server) trace(dir, id string, data []byte) {
	if s.opts.Trace == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.opts.Trace, "%s: %s %s", dir, id, data)
}

// listener wraps each accepted connection in a conn.
type listener struct {
	net.Listener
	srv *Server
}

func (l *listener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.srv.mu.Lock()
	l.srv.conns++
	l.srv.mu.Unlock()
	return newConn(l.srv, raw, l.srv.opts.TLS == ImplicitTLS), nil
}

// newConnID returns an id in the style of Gmail's, such as
// "4a6f2c9e1b3dsm1234567".
func newConnID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("fakegmail: reading random bytes: %v", err))
	}
	return hex.EncodeToString(b[:6]) + fmt.Sprintf("sm%07d", int(b[6])<<8|int(b[7]))
}

func remoteHost(c *conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}
