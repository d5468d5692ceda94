package proxy

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// shutdownReply is sent to a client whose connection a stopping server
// closes between transactions. RFC 5321 section 3.8 lets a server send 421
// at any point when it has to shut down.
const shutdownReply = "421 4.3.2 Service shutting down, try again later\r\n"

// clientConn is the TCP connection of one client, as the server tracks it
// for a graceful stop. go-smtp reads and writes through it, directly or
// under TLS.
//
// A stopping server must not cut a transaction short, but go-smtp has no
// way to close a connection after the reply to the current command. So a
// connection that must close gets the closing flag, and its next Read,
// which go-smtp makes only after it wrote the previous reply, sends 421
// and returns io.EOF. A read deadline in the past wakes a Read that is
// already waiting.
type clientConn struct {
	net.Conn
	set      *connSet
	listener *listener

	mu sync.Mutex
	// reply is the connection that replies go out on, TLS included, while
	// a session exists; a 421 is sent only then.
	reply net.Conn
	// cancel ends the session's context.
	cancel context.CancelFunc
	// inTx is true from MAIL to the end of the transaction.
	inTx bool
	// upstream is the connection to the submission server while inTx.
	upstream net.Conn
	draining bool
	closing  bool
	// said421 is true once the client got a 421, so it gets only one.
	said421 bool

	closeOnce sync.Once
	closeErr  error
}

var pastDeadline = time.Unix(1, 0)

func (c *clientConn) Read(p []byte) (int, error) {
	if c.isClosing() {
		return 0, c.hangUp()
	}
	n, err := c.Conn.Read(p)
	if err != nil && c.isClosing() {
		return 0, c.hangUp()
	}
	return n, err
}

func (c *clientConn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// hangUp sends the 421 unless the client got one already, and returns
// io.EOF, on which go-smtp closes the connection without a reply.
func (c *clientConn) hangUp() error {
	c.mu.Lock()
	reply := c.reply
	say := reply != nil && !c.said421
	c.said421 = true
	c.mu.Unlock()
	if say {
		// A TLS connection writes through its own lock, which a Read of
		// the record layer below does not hold.
		reply.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(reply, shutdownReply)
	}
	return io.EOF
}

// SetReadDeadline keeps the deadline in the past once the connection is
// closing, because go-smtp sets a new one before each command.
func (c *clientConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		t = pastDeadline
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *clientConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// Close closes the socket and stops tracking the connection. go-smtp
// calls it when the connection's goroutine ends.
func (c *clientConn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.Conn.Close()
		c.set.remove(c)
		if c.listener != nil {
			c.listener.conns.Add(-1)
		}
	})
	return c.closeErr
}

// closeLocked marks the connection closing and wakes a Read that waits.
func (c *clientConn) closeLocked() {
	c.closing = true
	c.Conn.SetReadDeadline(pastDeadline)
}

// attach records the session that go-smtp created on the connection.
func (c *clientConn) attach(reply net.Conn, cancel context.CancelFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reply, c.cancel = reply, cancel
}

// The session's methods below accept a nil connection and do nothing.

// detach clears the session when it logs out. STARTTLS logs a session
// out too, and until the next EHLO there is none.
func (c *clientConn) detach() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reply, c.cancel = nil, nil
	c.inTx, c.upstream = false, nil
}

// beginTx marks the start of a transaction. It returns false when the
// server is stopping; the caller then replies with a 421, and the
// connection closes after it.
func (c *clientConn) beginTx() bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.draining {
		c.said421 = true
		c.closeLocked()
		return false
	}
	c.inTx = true
	return true
}

// setUpstream records the upstream connection of the transaction, which
// the server closes when the grace period of a stop runs out.
func (c *clientConn) setUpstream(up net.Conn) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.upstream = up
}

// endTx marks the end of a transaction. When the server is stopping, the
// connection closes after the current reply.
func (c *clientConn) endTx() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inTx, c.upstream = false, nil
	if c.draining {
		c.closeLocked()
	}
}

// drain marks the connection as belonging to a stopping server. A
// connection between transactions closes at once; one in a transaction
// closes when it ends. It reports whether a transaction is in flight.
func (c *clientConn) drain() (inTx bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	if !c.inTx {
		c.closeLocked()
	}
	return c.inTx
}

// abort ends a transaction that outlived the grace period: closing the
// upstream connection makes the session reply with a 4xx, so the client
// keeps the message and retries it.
func (c *clientConn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.upstream != nil {
		c.upstream.Close()
	}
	if c.cancel != nil {
		c.cancel()
	}
}

// connSet is every open client connection of a server.
type connSet struct {
	mu       sync.Mutex
	conns    map[*clientConn]struct{}
	draining bool
	// changed is closed and replaced whenever a connection is removed.
	changed chan struct{}
}

func newConnSet() *connSet {
	return &connSet{conns: make(map[*clientConn]struct{}), changed: make(chan struct{})}
}

// add starts tracking a new connection. It returns nil when the server
// is stopping; the caller closes raw then.
func (s *connSet) add(raw net.Conn, l *listener) *clientConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return nil
	}
	c := &clientConn{Conn: raw, set: s, listener: l}
	s.conns[c] = struct{}{}
	return c
}

func (s *connSet) remove(c *clientConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *connSet) snapshot() []*clientConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*clientConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// drain refuses new connections, closes those between transactions and
// marks the others to close when their transaction ends. It returns the
// number of connections and of transactions in flight.
func (s *connSet) drain() (conns, inTx int) {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	all := s.snapshot()
	for _, c := range all {
		if c.drain() {
			inTx++
		}
	}
	return len(all), inTx
}

// wait returns nil once no connection is left, or ctx's error.
func (s *connSet) wait(ctx context.Context) error {
	for {
		s.mu.Lock()
		n, changed := len(s.conns), s.changed
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// abort ends every transaction still in flight.
func (s *connSet) abort() {
	for _, c := range s.snapshot() {
		c.abort()
	}
}

// closeAll closes every socket. go-smtp then ends each connection and
// closes it, which removes it from the set.
func (s *connSet) closeAll() {
	for _, c := range s.snapshot() {
		c.Conn.Close()
	}
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
