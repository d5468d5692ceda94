// Package proxy is the SMTP side of the bridge. It accepts submissions
// from local clients with AUTH PLAIN or LOGIN and relays each transaction
// command by command to the provider's submission server with XOAUTH2.
// One place in it turns every error into an SMTP reply.
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

// Server serves SMTP on the configured listeners. Its methods are safe
// for concurrent use.
type Server struct {
	// background tracks goroutines that write to the store.
	background sync.WaitGroup
	// touched records when each user's last use was last written, so a
	// burst of logins costs one store write per user.
	touched sync.Map // user name -> time.Time

	users     Users
	tokens    *auth.Tokens
	passwords *auth.PasswordChecker
	log       *slog.Logger
	pool      *pool
	throttle  *throttle
	conns     *connSet
	activity  *activity

	settings atomic.Pointer[settings]
	sessions atomic.Int64

	// mu serializes Start, Reload and Shutdown.
	mu        sync.Mutex
	listeners []*listener
	started   time.Time
	stopping  bool
}

// settings is the configuration and providers that a reload replaces
// together.
type settings struct {
	cfg       *config.Config
	providers map[string]*auth.Provider
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
		conns:     newConnSet(),
		activity:  newActivity(),
	}
	s.settings.Store(&settings{cfg: o.Config, providers: o.Providers})

	hostname, err := os.Hostname()
	if err != nil || hostname == "" {
		hostname = "localhost"
	}
	d := &dialer{
		tokens:   o.Tokens,
		limits:   func() config.Limits { return s.cfg().Limits },
		hostname: hostname,
		log:      o.Log,
	}
	s.pool = newPool(d, func() config.Pool { return s.cfg().Pool })
	s.throttle = newThrottle(func() config.Throttle { return s.cfg().Throttle })
	return s, nil
}

func (s *Server) cfg() *config.Config { return s.settings.Load().cfg }

func (s *Server) provider(name string) (*auth.Provider, bool) {
	p, ok := s.settings.Load().providers[name]
	return p, ok
}

// Start opens every configured listener and serves each in its own
// goroutine. It returns once all of them accept connections; if one
// cannot open, none stays open.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started.IsZero() {
		return errors.New("proxy: server already started")
	}
	set := s.settings.Load()
	if err := s.apply(set.cfg, set.providers); err != nil {
		return err
	}
	s.started = time.Now()
	return nil
}

// Reload switches the server to cfg and providers without dropping a
// session. Listeners whose address is new open, those no longer
// configured stop accepting while their sessions continue, and the others
// stay open and take the new settings, certificates included, for their
// next connection. Limits, throttle, pool and provider settings apply to
// every session from its next use on.
//
// cfg must be valid, as config.Load returns it. If a listener cannot open
// or a certificate cannot be read, Reload changes nothing and returns the
// error.
func (s *Server) Reload(cfg *config.Config, providers map[string]*auth.Provider) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return errors.New("proxy: server is stopping")
	}
	if s.started.IsZero() {
		s.settings.Store(&settings{cfg: cfg, providers: providers})
	} else if err := s.apply(cfg, providers); err != nil {
		return err
	}
	s.tokens.SetRefreshAhead(cfg.Pool.RefreshMargin)
	return nil
}

// apply makes the listeners match cfg. Everything that can fail happens
// before anything changes.
func (s *Server) apply(cfg *config.Config, providers map[string]*auth.Provider) error {
	type step struct {
		l     *listener
		lc    config.Listener
		cert  *tls.Certificate
		fresh bool
	}
	removed := make(map[string]*listener, len(s.listeners))
	for _, l := range s.listeners {
		_, lc := l.current()
		removed[lc.Address] = l
	}
	steps := make([]step, 0, len(cfg.Listeners))
	rollback := func() {
		for _, st := range steps {
			if st.fresh {
				st.l.tcp.Close()
			}
		}
	}
	for _, lc := range cfg.Listeners {
		cert, err := loadCertificate(lc)
		if err != nil {
			rollback()
			return err
		}
		st := step{l: removed[lc.Address], lc: lc, cert: cert}
		if st.l == nil {
			if st.l, err = s.openListener(lc); err != nil {
				rollback()
				return err
			}
			st.fresh = true
		}
		delete(removed, lc.Address)
		steps = append(steps, st)
	}

	s.settings.Store(&settings{cfg: cfg, providers: providers})
	s.listeners = s.listeners[:0]
	for _, st := range steps {
		_, before := st.l.current()
		st.l.configure(st.lc, st.cert, cfg)
		switch {
		case st.fresh:
			go st.l.serve()
			s.log.Info("listening", "address", st.l.tcp.Addr().String(), "tls", st.lc.TLS)
		case before != st.lc:
			s.log.Info("listener settings changed; new connections get them",
				"address", st.l.tcp.Addr().String(), "tls", st.lc.TLS)
		}
		s.listeners = append(s.listeners, st.l)
	}
	for _, l := range removed {
		l.close()
		s.log.Info("stopped listening; its open sessions continue",
			"address", l.tcp.Addr().String(), "connections", l.conns.Load())
	}
	return nil
}

// Addrs returns the address of each listener, in configuration order.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		addrs[i] = l.tcp.Addr()
	}
	return addrs
}

// Sessions returns the number of open client sessions.
func (s *Server) Sessions() int64 { return s.sessions.Load() }

// abortWait is how long the sessions whose transaction a stop aborted get
// to send their 4xx reply before every connection is closed.
const abortWait = 3 * time.Second

// Shutdown stops accepting connections and closes the connections that
// are between transactions. It waits until ctx is done for the
// transactions in flight to finish, and each of their connections closes
// after the reply to its transaction. When ctx ends first, Shutdown
// aborts the transactions still in flight, so that their clients get a
// 4xx and keep the message, and then closes every connection. The pool
// of upstream connections closes last. Shutdown returns ctx's error if
// the grace period ran out.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	listeners := s.listeners
	s.listeners = nil
	s.stopping = true
	s.mu.Unlock()

	for _, l := range listeners {
		l.close()
	}
	conns, inTx := s.conns.drain()
	s.log.Info("stopped accepting; closing idle connections and waiting for transactions in flight",
		"connections", conns, "transactions", inTx)

	err := s.conns.wait(ctx)
	if err != nil {
		s.log.Warn("grace period over; aborting transactions in flight, their clients get a 4xx",
			"connections", s.conns.len())
		s.conns.abort()
		s.waitConns(abortWait)
		s.conns.closeAll()
		s.waitConns(abortWait)
	}
	s.pool.close()
	// The store closes after Shutdown, so the writes of last use must
	// end first.
	s.background.Wait()
	return err
}

func (s *Server) waitConns(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s.conns.wait(ctx)
}

// NewSession implements smtp.Backend. go-smtp calls it at the first HELO
// or EHLO of a connection.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ctx, cancel := context.WithCancel(context.Background())
	id := newSessionID()
	if tc := findTraced(c.Conn()); tc != nil {
		id = tc.id
	}
	sess := &session{
		srv:    s,
		conn:   c,
		id:     id,
		ctx:    ctx,
		cancel: cancel,
		start:  time.Now(),
		log:    s.log.With("session", id),
	}
	if cc := trackedConn(c.Conn()); cc != nil {
		sess.cc = cc
		cc.attach(c.Conn(), cancel)
	}
	s.sessions.Add(1)
	sess.log.Debug("session started", "client", c.Conn().RemoteAddr().String(), "helo", c.Hostname())
	return sess, nil
}

func (s *Server) sessionDone() { s.sessions.Add(-1) }

// trackedConn returns the clientConn below go-smtp's connection, which is
// TLS on top of it after STARTTLS or on an implicit TLS listener.
func trackedConn(c net.Conn) *clientConn {
	for ; c != nil; c = unwrapConn(c) {
		if cc, ok := c.(*clientConn); ok {
			return cc
		}
	}
	return nil
}

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
	l.write(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l errorLog) Println(v ...any) {
	l.write(strings.TrimSpace(fmt.Sprintln(v...)))
}

// write logs go-smtp's message. Read errors of connections that a client
// dropped or reset are routine and would flood the log, so they go to the
// debug level. Anything else is a warning.
func (l errorLog) write(msg string) {
	level := slog.LevelWarn
	if strings.HasPrefix(msg, "error handling ") &&
		(strings.Contains(msg, "connection reset by peer") || strings.Contains(msg, "broken pipe") ||
			strings.HasSuffix(msg, ": EOF")) {
		level = slog.LevelDebug
	}
	l.log.Log(context.Background(), level, "smtp server: "+msg)
}
