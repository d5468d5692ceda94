package fakegmail

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// conn sits between the client and go-smtp. It terminates TLS itself, both
// implicit and after STARTTLS, so that it can see the plaintext in both
// directions: it rewrites go-smtp's replies into the flavour's wording and
// applies the faults that go-smtp gives a session no hook for (greeting,
// DATA command). go-smtp sees a plain connection and never handles
// STARTTLS.
type conn struct {
	srv *Server
	id  string
	raw net.Conn

	mu      sync.Mutex
	secure  bool
	cur     net.Conn // raw, or the *tls.Conn over it
	in      *bufio.Reader
	greeted bool
	inData  bool  // DATA accepted, body lines follow
	chunk   int64 // BDAT bytes still to pass through
	midLine bool  // the last read returned part of a long line

	pending []byte   // client bytes ready for go-smtp
	out     []byte   // partial reply line from go-smtp
	reply   []string // lines of a multi-line reply so far
}

func newConn(s *Server, raw net.Conn, implicitTLS bool) *conn {
	c := &conn{srv: s, id: newConnID(), raw: raw, cur: raw}
	if implicitTLS {
		c.cur = tls.Server(raw, s.tlsConfig)
		c.secure = true
	}
	c.in = bufio.NewReader(c.cur)
	return c
}

func (c *conn) isTLS() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.secure
}

// drop closes the TCP connection at once, without a TLS close alert.
func (c *conn) drop() {
	c.raw.Close()
}

func (c *conn) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// fill moves at most one line, or one piece of a BDAT chunk, from the client
// into pending. Handing go-smtp one command line at a time means that every
// reply to earlier commands is written before the next command is looked at.
func (c *conn) fill() error {
	if c.chunk > 0 {
		buf := make([]byte, min(c.chunk, 32<<10))
		n, err := c.in.Read(buf)
		c.chunk -= int64(n)
		c.pending = buf[:n]
		return err
	}

	line, err := c.in.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		c.pending = bytes.Clone(line)
		c.midLine = true
		return nil
	}
	if err != nil && len(line) == 0 {
		return err
	}
	line = bytes.Clone(line)
	wasMidLine := c.midLine
	c.midLine = false
	c.srv.trace("C", c.id, line)

	c.mu.Lock()
	inData := c.inData
	c.mu.Unlock()
	switch {
	case wasMidLine:
	case inData:
		if s := string(line); s == ".\r\n" || s == ".\n" {
			c.mu.Lock()
			c.inData = false
			c.mu.Unlock()
		}
	default:
		keep, err := c.command(line)
		if err != nil || !keep {
			return err
		}
	}
	c.pending = line
	return nil
}

// command handles a client command line before go-smtp sees it. It returns
// false if go-smtp must not see the line.
func (c *conn) command(line []byte) (keep bool, err error) {
	verb, arg, _ := strings.Cut(strings.TrimRight(string(line), "\r\n"), " ")
	switch strings.ToUpper(verb) {
	case "STARTTLS":
		if c.srv.opts.TLS != StartTLS || c.isTLS() {
			return true, nil
		}
		return false, c.startTLS()
	case "DATA":
		return c.dataCommandFault()
	case "BDAT":
		size, _, _ := strings.Cut(strings.TrimSpace(arg), " ")
		if n, err := strconv.ParseInt(size, 10, 64); err == nil && n > 0 {
			c.chunk = n
		}
	}
	return true, nil
}

func (c *conn) startTLS() error {
	if c.in.Buffered() > 0 {
		// A client must wait for the 220 before the handshake. Bytes
		// pipelined after STARTTLS would be injected plaintext.
		c.writeLines([]string{"501 5.5.1 Unexpected data after STARTTLS"})
		c.drop()
		return io.ErrUnexpectedEOF
	}
	c.writeLines([]string{"220 2.0.0 Ready to start TLS"})

	tc := tls.Server(c.raw, c.srv.tlsConfig)
	if err := tc.Handshake(); err != nil {
		c.drop()
		return fmt.Errorf("TLS handshake after STARTTLS: %w", err)
	}
	c.mu.Lock()
	c.cur = tc
	c.secure = true
	c.mu.Unlock()
	c.in = bufio.NewReader(tc)
	return nil
}

// dataCommandFault applies a fault at the DATA command. The line is kept
// from go-smtp when the fault replies, so go-smtp never sends 354.
func (c *conn) dataCommandFault() (keep bool, err error) {
	f, ok := c.srv.takeFault(StageData)
	if !ok {
		return true, nil
	}
	if !c.srv.sleep(f.Delay) {
		return false, net.ErrClosed
	}
	switch {
	case f.Drop:
		c.drop()
		return false, net.ErrClosed
	case f.Reply != nil:
		c.writeLines(c.srv.rewriteReply(c, errorLines(f.Reply)))
		return false, nil
	}
	return true, nil
}

func (c *conn) Write(p []byte) (int, error) {
	c.out = append(c.out, p...)
	for {
		i := bytes.IndexByte(c.out, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimRight(string(c.out[:i]), "\r")
		c.out = c.out[i+1:]
		if err := c.replyLine(line); err != nil {
			return len(p), err
		}
	}
}

// replyLine collects the lines of one reply from go-smtp and sends the
// reply in the flavour's wording once the last line is in.
func (c *conn) replyLine(line string) error {
	if !c.greeted {
		c.greeted = true
		return c.greet()
	}
	c.reply = append(c.reply, line)
	if len(line) > 3 && line[3] == '-' {
		return nil
	}
	lines := c.srv.rewriteReply(c, c.reply)
	c.reply = nil

	if strings.HasPrefix(line, "354") {
		c.mu.Lock()
		c.inData = true
		c.mu.Unlock()
	}
	return c.writeLines(lines)
}

// greet sends the greeting in place of go-smtp's, or applies a greeting
// fault.
func (c *conn) greet() error {
	f, ok := c.srv.takeFault(StageGreeting)
	if ok {
		if !c.srv.sleep(f.Delay) {
			return net.ErrClosed
		}
		switch {
		case f.Drop:
			c.drop()
			return net.ErrClosed
		case f.Reply != nil:
			// A server that greets with an error closes the connection.
			c.writeLines(c.srv.rewriteReply(c, errorLines(f.Reply)))
			c.drop()
			return net.ErrClosed
		}
	}
	return c.writeLines([]string{c.srv.greeting(c.id)})
}

// writeLines sends a reply. The server closes the connection after a 421.
func (c *conn) writeLines(lines []string) error {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	c.srv.trace("S", c.id, []byte(b.String()))

	c.mu.Lock()
	w := c.cur
	c.mu.Unlock()
	_, err := io.WriteString(w, b.String())
	if strings.HasPrefix(lines[len(lines)-1], "421 ") {
		c.drop()
	}
	return err
}

// errorLines formats e as go-smtp would write it.
func errorLines(e *smtp.SMTPError) []string {
	code := e.EnhancedCode
	if code == smtp.EnhancedCodeNotSet {
		switch cat := e.Code / 100; cat {
		case 2, 4, 5:
			code = smtp.EnhancedCode{cat, 0, 0}
		default:
			code = smtp.NoEnhancedCode
		}
	}

	text := strings.Split(e.Message, "\n")
	lines := make([]string, len(text))
	for i, t := range text {
		lines[i] = fmt.Sprintf("%d-%s", e.Code, t)
	}
	last := len(text) - 1
	if code == smtp.NoEnhancedCode {
		lines[last] = fmt.Sprintf("%d %s", e.Code, text[last])
	} else {
		lines[last] = fmt.Sprintf("%d %d.%d.%d %s", e.Code, code[0], code[1], code[2], text[last])
	}
	return lines
}

// Close closes the connection, with a TLS close alert if TLS is on.
func (c *conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.Close()
}

func (c *conn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *conn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *conn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }
