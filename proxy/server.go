// Package proxy is the SMTP side of the bridge: it accepts submissions
// from local clients with AUTH PLAIN or LOGIN, relays each transaction
// command by command to the provider's submission server with XOAUTH2,
// and turns every error into an SMTP reply in one place.
//
// It implements the submission side of RFC 5321 and RFC 6409, with the
// extensions of RFC 1870 (SIZE), 6152 (8BITMIME), 2920 (PIPELINING), 2034
// (ENHANCEDSTATUSCODES), 6531 (SMTPUTF8), 3030 (CHUNKING) and 4954 (AUTH).
package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/store"
)

// Users looks up local users; *store.Store implements it.
type Users interface {
	User(name string) (store.User, error)
	TouchUser(name string, t time.Time) error
}

// Options are the parts a Server is built from.
type Options struct {
	Config    *config.Config
	Users     Users
	Tokens    *auth.Tokens
	Providers map[string]*auth.Provider
	Passwords *auth.PasswordChecker
	Log       *slog.Logger
}

// Server serves SMTP on the configured listeners.
type Server struct {
	users     Users
	tokens    *auth.Tokens
	passwords *auth.PasswordChecker
	log       *slog.Logger
	pool      *pool
	throttle  *throttle

	settings atomic.Pointer[settings]

	mu        sync.Mutex
	listeners []*listener
	active    sync.WaitGroup
	sessions  atomic.Int64
}

// settings is what a reload replaces as one.
type settings struct {
	cfg       *config.Config
	providers map[string]*auth.Provider
}

type listener struct {
	cfg  config.Listener
	smtp *smtp.Server
	net  net.Listener
}

// New returns a server that has not started listening.
func New(o Options) (*Server, error) {
	if o.Config == nil || o.Users == nil || o.Tokens == nil || o.Passwords == nil || o.Log == nil {
		return nil, errors.New("proxy: Config, Users, Tokens, Passwords and Log are required")
	}
	s := &Server{
		users:     o.Users,
		tokens:    o.Tokens,
		passwords: o.Passwords,
		log:       o.Log,
	}
	s.settings.Store(&settings{cfg: o.Config, providers: o.Providers})

	hostname, err := os.Hostname()
	if err != nil || hostname == "" {
		hostname = "localhost"
	}
	d := &dialer{tokens: o.Tokens, limits: o.Config.Limits, hostname: hostname, log: o.Log}
	s.pool = newPool(d, func() config.Pool { return s.cfg().Pool }, o.Config.Limits.DialTimeout)
	s.throttle = newThrottle(func() config.Throttle { return s.cfg().Throttle })
	return s, nil
}

func (s *Server) cfg() *config.Config { return s.settings.Load().cfg }

func (s *Server) provider(name string) (*auth.Provider, bool) {
	p, ok := s.settings.Load().providers[name]
	return p, ok
}

// Start opens every configured listener and serves each in its own
// goroutine. It returns once all of them accept connections.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, lc := range s.cfg().Listeners {
		l, err := s.listen(lc)
		if err != nil {
			for _, l := range s.listeners {
				l.smtp.Close()
			}
			s.listeners = nil
			return err
		}
		s.listeners = append(s.listeners, l)
		s.log.Info("listening", "address", l.net.Addr().String(), "tls", lc.TLS)
		go func() {
			if err := l.smtp.Serve(l.net); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
				s.log.Error("listener stopped", "address", lc.Address, "err", err)
			}
		}()
	}
	return nil
}

func (s *Server) listen(lc config.Listener) (*listener, error) {
	cfg := s.cfg()
	srv := smtp.NewServer(s)
	srv.Addr = lc.Address
	srv.Domain = lc.Hostname
	if srv.Domain == "" {
		srv.Domain = "localhost"
	}
	srv.MaxMessageBytes = cfg.Limits.MaxMessageBytes
	// The recipient limit is enforced by the session: go-smtp would also
	// advertise LIMITS, which Gmail does not.
	srv.MaxRecipients = 0
	srv.ReadTimeout = cfg.Limits.ReadTimeout
	srv.WriteTimeout = cfg.Limits.WriteTimeout
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = errorLog{s.log}
	srv.AllowInsecureAuth = lc.TLS == config.TLSImplicit || config.IsLoopback(lc.Address) || lc.InsecureAuth

	var tlsConfig *tls.Config
	if lc.TLS != config.TLSNone {
		cert, err := tls.LoadX509KeyPair(lc.CertFile, lc.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("listener %s: loading certificate: %w", lc.Address, err)
		}
		minVersion, _ := config.TLSVersion(lc.MinTLSVersion)
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: minVersion}
	}
	if lc.TLS == config.TLSStartTLS {
		srv.TLSConfig = tlsConfig
	}

	nl, err := net.Listen("tcp", lc.Address)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", lc.Address, err)
	}
	if lc.TLS == config.TLSImplicit {
		nl = tls.NewListener(nl, tlsConfig)
	}
	return &listener{cfg: lc, smtp: srv, net: nl}, nil
}

// Addrs returns the address of each listener, in configuration order.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		addrs[i] = l.net.Addr()
	}
	return addrs
}

// Sessions returns the number of open client sessions.
func (s *Server) Sessions() int64 { return s.sessions.Load() }

// Shutdown stops accepting connections and waits for the open sessions to
// end until ctx is done; then it closes the rest. It closes the pool of
// upstream connections last.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	listeners := s.listeners
	s.listeners = nil
	s.mu.Unlock()

	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.smtp.Shutdown(ctx); err != nil {
				l.smtp.Close()
			}
		}()
	}
	wg.Wait()
	s.pool.close()
	return ctx.Err()
}

// NewSession implements smtp.Backend. go-smtp calls it at the first HELO
// or EHLO of a connection.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ctx, cancel := context.WithCancel(context.Background())
	id := newSessionID()
	sess := &session{
		srv:    s,
		conn:   c,
		id:     id,
		ctx:    ctx,
		cancel: cancel,
		start:  time.Now(),
		log:    s.log.With("session", id),
	}
	s.sessions.Add(1)
	sess.log.Debug("session started", "client", c.Conn().RemoteAddr().String(), "helo", c.Hostname())
	return sess, nil
}

func (s *Server) sessionDone() { s.sessions.Add(-1) }

var sessionEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newSessionID returns 8 random base32 characters, 40 bits.
func newSessionID() string {
	b := make([]byte, 5)
	rand.Read(b)
	return strings.ToLower(sessionEncoding.EncodeToString(b))
}

// errorLog sends go-smtp's own error messages to the structured log.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Printf(format string, v ...any) {
	l.log.Warn("smtp server: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l errorLog) Println(v ...any) {
	l.log.Warn("smtp server: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
