package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
)

// maxTraceLine bounds how much of one line a trace keeps; the rest of a
// longer line is counted, not logged.
const maxTraceLine = 1000

// tracedConn logs the SMTP conversation on a connection at debug level,
// one record per line. The SASL responses of AUTH, which carry passwords
// and access tokens in base64, are left out, and the message content is
// logged as a byte count only. go-smtp's own Server.Debug and
// Client.DebugWriter copy AUTH lines raw and mix the connections of a
// server, so the bridge traces each connection itself.
//
// NOTE: the trace stops at STARTTLS, because what follows is TLS records,
// so a STARTTLS listener's sessions are traced only up to STARTTLS.
// go-smtp starts TLS over this connection and gives no hook above it.
type tracedConn struct {
	net.Conn
	// id is the session id of a client connection, chosen at accept so
	// that the lines before EHLO carry it too.
	id string
	tr *tracer
}

// newTracedConn traces conn. clientReads is true on the bridge's own
// listeners, where the client's lines are read, and false on upstream
// connections, where the bridge is the client and writes them.
func newTracedConn(conn net.Conn, log *slog.Logger, clientReads bool) *tracedConn {
	return &tracedConn{Conn: conn, tr: &tracer{log: log, clientReads: clientReads}}
}

// tracing reports whether log records debug messages, so that connections
// are traced.
func tracing(log *slog.Logger) bool {
	return log.Enabled(context.Background(), slog.LevelDebug)
}

// unwrapConn returns the connection below a TLS or tracing layer, or nil.
func unwrapConn(c net.Conn) net.Conn {
	switch c := c.(type) {
	case *tls.Conn:
		return c.NetConn()
	case *tracedConn:
		return c.Conn
	}
	return nil
}

// findTraced returns the tracedConn among the layers of c, or nil.
func findTraced(c net.Conn) *tracedConn {
	for ; c != nil; c = unwrapConn(c) {
		if tc, ok := c.(*tracedConn); ok {
			return tc
		}
	}
	return nil
}

func (c *tracedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.tr.feed(c.tr.clientReads, p[:n])
	}
	return n, err
}

func (c *tracedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.tr.feed(!c.tr.clientReads, p[:n])
	}
	return n, err
}

// tracer splits both directions of one connection into lines and keeps
// the state that decides what of a client line may be logged.
type tracer struct {
	log         *slog.Logger
	clientReads bool

	mu      sync.Mutex
	partial [2][]byte // incomplete line per direction: server, client
	long    [2]int    // bytes dropped from an overlong line
	// auth is true from an AUTH command to the first reply that is not
	// 334: every client line in between is a SASL response.
	auth bool
	// data is true from DATA to the final dot, and chunk counts the
	// bytes of a BDAT chunk still to come.
	data     bool
	chunk    int64
	content  int64
	startTLS bool
	stopped  bool
}

// feed takes bytes sent by the client (fromClient) or by the server.
func (t *tracer) feed(fromClient bool, p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	dir := 0
	if fromClient {
		dir = 1
	}
	for len(p) > 0 && !t.stopped {
		if fromClient && t.chunk > 0 {
			n := min(int64(len(p)), t.chunk)
			t.chunk -= n
			t.content += n
			p = p[n:]
			if t.chunk == 0 {
				t.emit(true, "[BDAT chunk: "+strconv.FormatInt(t.content, 10)+" bytes]")
				t.content = 0
			}
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.keep(dir, p)
			return
		}
		t.keep(dir, p[:i+1])
		p = p[i+1:]
		line := strings.TrimRight(string(t.partial[dir]), "\r\n")
		dropped := t.long[dir]
		t.partial[dir], t.long[dir] = t.partial[dir][:0], 0
		if fromClient {
			t.clientLine(line, dropped)
		} else {
			t.serverLine(line, dropped)
		}
	}
}

// keep appends p to the incomplete line of dir, up to maxTraceLine.
func (t *tracer) keep(dir int, p []byte) {
	room := maxTraceLine - len(t.partial[dir])
	if len(p) > room {
		t.long[dir] += len(p) - room
		p = p[:room]
	}
	t.partial[dir] = append(t.partial[dir], p...)
}

func (t *tracer) clientLine(line string, dropped int) {
	switch {
	case t.data:
		if line == "." {
			t.data = false
			t.emit(true, "[message content: "+strconv.FormatInt(t.content, 10)+" bytes]")
			t.emit(true, ".")
			t.content = 0
			return
		}
		t.content += int64(len(line)+dropped) + 2
		return
	case t.auth:
		if line == "*" {
			t.emit(true, "*")
			return
		}
		t.emit(true, "[SASL response]")
		return
	}

	verb, arg, _ := strings.Cut(line, " ")
	switch strings.ToUpper(verb) {
	case "AUTH":
		// The mechanism is safe to show; an initial response is not.
		t.auth = true
		mech, ir, _ := strings.Cut(arg, " ")
		if ir != "" {
			mech += " [initial response]"
		}
		t.emit(true, verb+" "+mech)
		return
	case "DATA":
		t.data = true
	case "BDAT":
		size, _, _ := strings.Cut(strings.TrimSpace(arg), " ")
		if n, err := strconv.ParseInt(size, 10, 64); err == nil && n > 0 {
			t.chunk = n
		}
	case "STARTTLS":
		t.startTLS = true
	}
	if dropped > 0 {
		line += " [" + strconv.Itoa(dropped) + " more bytes]"
	}
	t.emit(true, line)
}

func (t *tracer) serverLine(line string, dropped int) {
	if dropped > 0 {
		line += " [" + strconv.Itoa(dropped) + " more bytes]"
	}
	t.emit(false, line)
	if len(line) > 3 && line[3] == '-' {
		return
	}
	code := line[:min(3, len(line))]
	if t.auth && code != "334" {
		t.auth = false
	}
	if t.data && code != "354" && !strings.HasPrefix(code, "2") {
		// DATA was rejected, so no content follows.
		t.data = false
	}
	if t.startTLS {
		t.startTLS = false
		if code == "220" {
			t.stopped = true
			t.emit(false, "[TLS starts; the trace of this connection ends]")
		}
	}
}

// emit logs one line with who sent it: on the bridge's listeners the
// client or the bridge, upstream the bridge or the upstream.
func (t *tracer) emit(fromClient bool, line string) {
	from := "bridge"
	switch {
	case fromClient && t.clientReads:
		from = "client"
	case !fromClient && !t.clientReads:
		from = "upstream"
	}
	t.log.Log(context.Background(), slog.LevelDebug, "smtp trace", "from", from, "line", line)
}
