package clients

import (
	"bytes"
	"encoding/base64"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// printerConn is a raw SMTP conversation, scripted the way scan-to-email
// firmware talks: line by line, with no SMTP library.
type printerConn struct {
	t    *testing.T
	p    *bridgeProc
	conn *net.TCPConn
	buf  []byte
}

// replyTimeout bounds the wait for one reply from the bridge.
const replyTimeout = 30 * time.Second

func dialPrinter(t *testing.T, p *bridgeProc) *printerConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", p.Addr, replyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &printerConn{t: t, p: p, conn: conn.(*net.TCPConn)}
	c.expect("220 ")
	return c
}

// write sends raw bytes, with no line ending added.
func (c *printerConn) write(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads one reply, all of its lines.
func (c *printerConn) reply() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	var lines []string
	for {
		i := bytes.Index(c.buf, []byte("\r\n"))
		if i < 0 {
			chunk := make([]byte, 4096)
			n, err := c.conn.Read(chunk)
			if err != nil {
				c.t.Fatalf("reading a reply: %v (have %q)", err, c.buf)
			}
			c.buf = append(c.buf, chunk[:n]...)
			continue
		}
		line := string(c.buf[:i])
		c.buf = c.buf[i+2:]
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (c *printerConn) expect(prefix string) string {
	c.t.Helper()
	r := c.reply()
	if !strings.HasPrefix(r, prefix) {
		c.t.Fatalf("reply %q, want %q...", r, prefix)
	}
	return r
}

// cmd sends one command line with CRLF and expects a reply.
func (c *printerConn) cmd(line, prefix string) string {
	c.t.Helper()
	c.write(line + "\r\n")
	return c.expect(prefix)
}

// session returns the bridge's session id for this connection, from the
// log line that the first HELO or EHLO writes.
func (c *printerConn) session() string {
	c.t.Helper()
	re := regexp.MustCompile(`msg="session started" session=(\S+) client=` +
		regexp.QuoteMeta(c.conn.LocalAddr().String()) + ` `)
	return re.FindStringSubmatch(c.p.waitLog(c.t, re, time.Minute))[1]
}

// waitClosed waits until the bridge has logged the end of the session.
func (c *printerConn) waitClosed(session string) {
	c.t.Helper()
	c.p.waitLog(c.t, regexp.MustCompile(`msg="session closed" session=`+regexp.QuoteMeta(session)+` `), time.Minute)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// login greets with HELO, as old firmware does, and authenticates with
// AUTH LOGIN in its two-challenge form.
func (c *printerConn) login() {
	c.t.Helper()
	c.cmd("HELO mfp-4021", "250 ")
	if r := c.cmd("AUTH LOGIN", "334 "); r != "334 "+b64("Username:") {
		c.t.Errorf("first challenge %q, want Username:", r)
	}
	if r := c.cmd(b64(testUser), "334 "); r != "334 "+b64("Password:") {
		c.t.Errorf("second challenge %q, want Password:", r)
	}
	c.cmd(b64(testPassword), "235 ")
}

// printerMessage is a scan notification as a printer builds it.
const printerMessage = "From: MFP-4021 <scanner@example.com>\r\n" +
	"To: accounts@example.org\r\n" +
	"Subject: Scan 0042\r\n" +
	"Date: Tue, 08 Dec 2026 09:00:00 +0100\r\n" +
	"Message-ID: <scan-0042@mfp-4021.office.example>\r\n" +
	"\r\n" +
	"Scanned document.\r\n" +
	"..a line that starts with a dot, stuffed\r\n"

// printerMessageData is printerMessage as the upstream gets it, without
// the stuffing dot.
var printerMessageData = strings.Replace(printerMessage, "\r\n..a line", "\r\n.a line", 1)

func TestPrinterSessions(t *testing.T) {
	t.Parallel()
	p := startBridge(t)

	t.Run("HELO AUTH LOGIN lower case", func(t *testing.T) {
		skip := len(p.Gmail.Messages())
		c := dialPrinter(t, p)
		c.login()
		c.cmd("mail from: <"+testAccount+">", "250 ")
		c.cmd("rcpt to: <accounts@example.org>", "250 ")
		c.cmd("data", "354 ")
		c.write(printerMessage + ".\r\n")
		c.expect("250 ")
		c.cmd("quit", "221 ")
		checkPrinterMessage(t, p, skip, "LOGIN")
	})

	t.Run("AUTH LOGIN with username", func(t *testing.T) {
		skip := len(p.Gmail.Messages())
		c := dialPrinter(t, p)
		c.cmd("HELO mfp-4021", "250 ")
		if r := c.cmd("AUTH LOGIN "+b64(testUser), "334 "); r != "334 "+b64("Password:") {
			t.Errorf("challenge %q, want Password:", r)
		}
		c.cmd(b64(testPassword), "235 ")
		c.cmd("MAIL FROM: <"+testAccount+">", "250 ")
		c.cmd("RCPT TO: <accounts@example.org>", "250 ")
		c.cmd("DATA", "354 ")
		c.write(printerMessage + ".\r\n")
		c.expect("250 ")
		c.cmd("QUIT", "221 ")
		checkPrinterMessage(t, p, skip, "LOGIN")
	})

	t.Run("QUIT without waiting", func(t *testing.T) {
		skip := len(p.Gmail.Messages())
		c := dialPrinter(t, p)
		c.login()
		session := c.session()
		c.cmd("mail from: <"+testAccount+">", "250 ")
		c.cmd("rcpt to: <accounts@example.org>", "250 ")
		c.cmd("data", "354 ")
		// The final dot and QUIT go in one write, and the connection
		// closes without reading the replies to either.
		c.write(printerMessage + ".\r\nQUIT\r\n")
		c.conn.Close()
		c.waitClosed(session)
		checkPrinterMessage(t, p, skip, "LOGIN")
	})

	t.Run("drop after final dot", func(t *testing.T) {
		skip := len(p.Gmail.Messages())
		c := dialPrinter(t, p)
		c.login()
		session := c.session()
		c.cmd("mail from: <"+testAccount+">", "250 ")
		c.cmd("rcpt to: <accounts@example.org>", "250 ")
		c.cmd("data", "354 ")
		c.write(printerMessage + ".\r\n")
		c.conn.Close()
		c.waitClosed(session)
		checkPrinterMessage(t, p, skip, "LOGIN")
	})

	for _, drop := range []struct {
		name string
		// reset closes with a TCP RST instead of a FIN.
		reset bool
	}{
		{"drop before final dot", false},
		{"reset before final dot", true},
	} {
		t.Run(drop.name, func(t *testing.T) {
			skip := len(p.Gmail.Messages())
			notRelayed := p.logs.count(notRelayedRE)
			c := dialPrinter(t, p)
			c.login()
			session := c.session()
			c.cmd("mail from: <"+testAccount+">", "250 ")
			c.cmd("rcpt to: <accounts@example.org>", "250 ")
			c.cmd("data", "354 ")
			// Everything but the final dot, as when the printer loses
			// power mid-message.
			c.write(printerMessage)
			if drop.reset {
				c.conn.SetLinger(0)
			}
			c.conn.Close()
			c.waitClosed(session)
			if n := len(p.Gmail.Messages()); n != skip {
				t.Errorf("upstream got %d messages from a message without its final dot", n-skip)
			}
			if p.logs.count(notRelayedRE) != notRelayed+1 {
				t.Errorf("bridge did not log the message as not relayed")
			}
		})
	}
}

var notRelayedRE = regexp.MustCompile(`msg="message not relayed: client data failed"`)

// checkPrinterMessage checks that printerMessage arrived upstream exactly
// once, from a session that authenticated with mech.
func checkPrinterMessage(t *testing.T, p *bridgeProc, skip int, mech string) {
	t.Helper()
	m := corpusMessage{
		From: testAccount,
		To:   []string{"accounts@example.org"},
		Data: []byte(printerMessageData),
	}
	expectOneMessage(t, p, skip, m, mech)
}

// TestPrinterBareLineEndings sends messages with bare LF and bare CR line
// endings. Each contains a sequence that would end the data at a server
// that took a bare LF or CR as a line ending, followed by what would be a
// second transaction. The bridge relays each as one message with CRLF
// line endings, and nothing else.
func TestPrinterBareLineEndings(t *testing.T) {
	t.Parallel()
	p := startBridge(t)
	const (
		head     = "From: MFP-4021 <scanner@example.com>\nTo: accounts@example.org\nSubject: Scan 0043\n\nbefore"
		smuggled = "MAIL FROM:<ceo@example.net>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n" +
			"Subject: smuggled\r\n\r\nsmuggled body\r\n"
	)
	for _, tc := range []struct {
		name, seq string
		// want is what arrives upstream in place of seq.
		want string
	}{
		{"LF only", "\n", "\r\n"},
		{"LF dot LF", "\n.\n", "\r\n.\r\n"},
		{"CR dot LF", "\r.\n", "\r\n.\r\n"},
		{"LF dot CRLF", "\n.\r\n", "\r\n.\r\n"},
		// go-smtp's server takes CRLF "." as the start of a dot-stuffed
		// line and removes the dot, so the bare LF is a line of its own.
		{"CRLF dot LF", "\r\n.\n", "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			skip := len(p.Gmail.Messages())
			repaired := p.logs.count(repairedRE)
			c := dialPrinter(t, p)
			c.login()
			c.cmd("mail from: <"+testAccount+">", "250 ")
			c.cmd("rcpt to: <accounts@example.org>", "250 ")
			c.cmd("data", "354 ")
			c.write(head + tc.seq + smuggled + ".\r\n")
			c.expect("250 ")
			c.cmd("quit", "221 ")

			// Every command had its reply, so a second message would be
			// upstream by now.
			msgs := p.Gmail.Messages()[skip:]
			if len(msgs) != 1 {
				t.Fatalf("upstream got %d messages, want 1", len(msgs))
			}
			want := strings.ReplaceAll(head, "\n", "\r\n") + tc.want + smuggled
			assertSameData(t, msgs[0].Data, []byte(want))
			if to := msgs[0].To; len(to) != 1 || to[0] != "accounts@example.org" {
				t.Errorf("recipients %q, want [accounts@example.org]", to)
			}
			p.waitLogN(t, repairedRE, repaired+1, time.Minute)
		})
	}
}

// TestPrinterDataWithoutEnd sends a message with bare LF line endings
// throughout, ended with LF "." LF. That is no end of data, so the bridge
// relays nothing and, after read_timeout, replies 451 with the reason.
func TestPrinterDataWithoutEnd(t *testing.T) {
	t.Parallel()
	p := startBridge(t, "read_timeout: 2s")
	c := dialPrinter(t, p)
	c.login()
	c.cmd("mail from: <"+testAccount+">", "250 ")
	c.cmd("rcpt to: <accounts@example.org>", "250 ")
	c.cmd("data", "354 ")
	c.write(strings.ReplaceAll(printerMessage, "\r\n", "\n") + ".\n")
	reply := c.expect("451 4.4.2 ")
	if !strings.Contains(reply, "no end of data (CRLF . CRLF) within 2s") {
		t.Errorf("reply %q does not give the reason", reply)
	}
	if n := len(p.Gmail.Messages()); n != 0 {
		t.Errorf("upstream got %d messages, want 0", n)
	}
	p.waitLog(t, regexp.MustCompile(`level=WARN msg="message not relayed: no end of data within read_timeout`), time.Minute)
}
