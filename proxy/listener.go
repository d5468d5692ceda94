package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/config"
)

// listener is one configured listen address. Its TCP socket stays open
// across reloads, so no connection is refused while the configuration
// changes. Each configuration of the listener gets a go-smtp server of
// its own, a front, because go-smtp reads the settings of its server
// without a lock. The connections that a front accepted keep it to the
// end, and new connections go to the newest front.
type listener struct {
	srv *Server
	tcp net.Listener
	// cert is the certificate that every front of the listener presents,
	// replaced on reload.
	cert atomic.Pointer[tls.Certificate]
	// conns counts the open client connections, for max_connections.
	conns atomic.Int64

	mu     sync.Mutex
	cfg    config.Listener
	front  *front
	closed bool
}

// front is the go-smtp server of one configuration of a listener. It is
// the net.Listener that go-smtp serves, fed by the listener's accept
// loop.
type front struct {
	smtp     *smtp.Server
	addr     net.Addr
	implicit *tls.Config
	conns    chan net.Conn
	done     chan struct{}
	once     sync.Once
}

func (f *front) Accept() (net.Conn, error) {
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.done:
		return nil, net.ErrClosed
	}
}

// Close stops the front from accepting; the connections it accepted
// continue.
func (f *front) Close() error {
	f.once.Do(func() { close(f.done) })
	return nil
}

func (f *front) Addr() net.Addr { return f.addr }

// loadCertificate reads the listener's certificate and key, or returns
// nil for a listener without TLS.
func loadCertificate(lc config.Listener) (*tls.Certificate, error) {
	if lc.TLS == config.TLSNone {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(lc.CertFile, lc.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("listener %s: loading certificate: %w", lc.Address, err)
	}
	return &cert, nil
}

// openListener binds the TCP socket of lc. It does not accept yet.
func (s *Server) openListener(lc config.Listener) (*listener, error) {
	tcp, err := net.Listen("tcp", lc.Address)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", lc.Address, err)
	}
	return &listener{srv: s, tcp: tcp, cfg: lc}, nil
}

// allowInsecureAuth reports whether go-smtp may take AUTH on a connection
// without TLS. A plaintext listener allows it on loopback addresses; a
// STARTTLS listener offers AUTH only after STARTTLS, on any address.
// insecure_auth lifts both rules.
func allowInsecureAuth(lc config.Listener) bool {
	switch lc.TLS {
	case config.TLSNone:
		return lc.InsecureAuth || config.IsLoopback(lc.Address)
	case config.TLSStartTLS:
		return lc.InsecureAuth
	}
	// On an implicit TLS listener, go-smtp gets connections that are
	// already TLS.
	return true
}

// configure makes a new front from lc and the limits of cfg, installs the
// certificate, and sends new connections to the front from now on.
func (l *listener) configure(lc config.Listener, cert *tls.Certificate, cfg *config.Config) {
	srv := smtp.NewServer(l.srv)
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
	srv.ErrorLog = errorLog{l.srv.log}
	srv.AllowInsecureAuth = allowInsecureAuth(lc)

	f := &front{smtp: srv, addr: l.tcp.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	if cert != nil {
		l.cert.Store(cert)
		minVersion, _ := config.TLSVersion(lc.MinTLSVersion)
		tlsConfig := &tls.Config{
			MinVersion: minVersion,
			// Through the listener, so that a reload reaches the
			// connections of older fronts that have not started TLS yet.
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return l.cert.Load(), nil
			},
		}
		switch lc.TLS {
		case config.TLSStartTLS:
			srv.TLSConfig = tlsConfig
		case config.TLSImplicit:
			f.implicit = tlsConfig
		}
	}

	l.mu.Lock()
	old := l.front
	l.front, l.cfg = f, lc
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	go func() {
		if err := srv.Serve(f); err != nil && !errors.Is(err, net.ErrClosed) {
			l.srv.log.Error("smtp server stopped", "address", l.tcp.Addr().String(), "err", err)
		}
	}()
}

func (l *listener) current() (*front, config.Listener) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.front, l.cfg
}

// close stops accepting. Open connections continue.
func (l *listener) close() {
	l.mu.Lock()
	l.closed = true
	f := l.front
	l.mu.Unlock()
	l.tcp.Close()
	if f != nil {
		f.Close()
	}
}

// serve accepts connections until the listener closes.
func (l *listener) serve() {
	var delay time.Duration
	for {
		raw, err := l.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if temporaryAccept(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.srv.log.Warn("accepting connection; retrying", "address", l.tcp.Addr().String(),
					"in", delay, "err", err)
				time.Sleep(delay)
				continue
			}
			l.srv.log.Error("accepting connections stopped", "address", l.tcp.Addr().String(), "err", err)
			return
		}
		delay = 0
		l.dispatch(raw)
	}
}

// dispatch hands a new connection to the current front.
func (l *listener) dispatch(raw net.Conn) {
	if max := l.srv.cfg().Limits.MaxConnections; max > 0 && l.conns.Load() >= int64(max) {
		l.srv.log.Warn("connection rejected: max_connections reached", "address", l.tcp.Addr().String(),
			"client", raw.RemoteAddr().String(), "max_connections", max)
		_, lc := l.current()
		go rejectBusy(raw, lc.TLS == config.TLSImplicit)
		return
	}
	cc := l.srv.conns.add(raw, l)
	if cc == nil {
		raw.Close()
		return
	}
	l.conns.Add(1)

	for {
		f, _ := l.current()
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if f == nil || closed {
			cc.Close()
			return
		}
		var conn net.Conn = cc
		if f.implicit != nil {
			conn = tls.Server(cc, f.implicit)
		}
		if tracing(l.srv.log) {
			id := newSessionID()
			tc := newTracedConn(conn, l.srv.log.With("session", id), true)
			tc.id = id
			conn = tc
		}
		select {
		case f.conns <- conn:
			return
		case <-f.done:
			// A reload replaced the front: hand it to the new one.
		}
	}
}

// rejectBusy sends 421 to a client over the connection limit and
// disconnects it. A client of an implicit TLS listener expects a
// handshake first, so it is only disconnected.
func rejectBusy(raw net.Conn, implicitTLS bool) {
	defer raw.Close()
	if implicitTLS {
		return
	}
	raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(raw, "421 4.7.0 Too many connections, try again later\r\n")
}

// temporaryAccept reports whether accepting may succeed on a later try,
// as when the process ran out of file descriptors (EMFILE).
func temporaryAccept(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}
