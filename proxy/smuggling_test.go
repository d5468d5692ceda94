package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakegmail"
)

// wireLog records what fakegmail's trace writes, one entry per write: each
// is "C: id " or "S: id " and one line as it crossed the wire.
type wireLog struct {
	mu      sync.Mutex
	entries []string
}

func (w *wireLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.entries = append(w.entries, string(p))
	return len(p), nil
}

// reset drops the entries so far.
func (w *wireLog) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.entries = nil
}

// dataSections returns the bytes the bridge sent upstream after each DATA
// command, up to and without the line that ends the data.
func (w *wireLog) dataSections() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var sections []string
	inData := map[string]*strings.Builder{}
	for _, e := range w.entries {
		if !strings.HasPrefix(e, "C: ") {
			continue
		}
		id, line, _ := strings.Cut(e[3:], " ")
		if b, ok := inData[id]; ok {
			if line == ".\r\n" {
				sections = append(sections, b.String())
				delete(inData, id)
				continue
			}
			b.WriteString(line)
			continue
		}
		if strings.EqualFold(strings.TrimRight(line, "\r\n"), "DATA") {
			inData[id] = &strings.Builder{}
		}
	}
	return sections
}

// smuggled is what an attacker appends after a sequence that some server
// might take for the end of the data: a second transaction.
const smuggled = "MAIL FROM:<attacker@example.net>\r\n" +
	"RCPT TO:<victim@example.net>\r\n" +
	"DATA\r\n" +
	"From: <ceo@example.com>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n" +
	".\r\n"

// smugglingSequences end a line and hold a lone dot with line endings that
// are not CRLF, as in the SMTP smuggling attacks published in 2023.
var smugglingSequences = []struct{ name, seq string }{
	{"LF dot LF", "\n.\n"},
	{"CR dot LF", "\r.\n"},
	{"LF dot CRLF", "\n.\r\n"},
	{"CRLF dot LF", "\r\n.\n"},
	{"CR dot CRLF", "\r.\r\n"},
	{"CRLF dot CR", "\r\n.\r"},
	{"CR dot CR", "\r.\r"},
	{"LF dot CR", "\n.\r"},
	{"CRLF dot CR CRLF", "\r\n.\r\r\n"},
	{"CRLF NUL dot CRLF", "\r\n\x00.\r\n"},
	{"CRLF dot NUL CRLF", "\r\n.\x00\r\n"},
	{"CRLF dot space CRLF", "\r\n. \r\n"},
}

// TestSmugglingNeverEndsDataEarly sends a message whose body holds each
// sequence followed by a second transaction. The bridge must reply once
// for the whole message, relay nothing of the second transaction as a
// transaction, and never send the upstream a lone dot on a line, whatever
// line ending the upstream would accept.
func TestSmugglingNeverEndsDataEarly(t *testing.T) {
	wire := &wireLog{}
	h := newHarness(t, bridgetest.Options{Gmail: func(o *fakegmail.Options) { o.Trace = wire }})
	for _, tc := range smugglingSequences {
		for _, bdat := range []bool{false, true} {
			name := tc.name
			if bdat {
				name += " in BDAT"
			}
			t.Run(name, func(t *testing.T) {
				wire.reset()
				before := len(h.Gmail.Messages())
				r := h.raw(t)
				r.cmd("EHLO printer", "250")
				r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
				r.cmd("MAIL FROM:<"+testAccount+">", "250")
				r.cmd("RCPT TO:<a@example.org>", "250")

				// The smuggled transaction ends with CRLF "." CRLF, which
				// ends DATA here too; in a BDAT chunk it is content.
				body := "Subject: smuggling test\r\n\r\nbefore" + tc.seq + smuggled
				var reply string
				if bdat {
					r.send(fmt.Sprintf("BDAT %d LAST", len(body)))
					r.conn.Write([]byte(body))
					reply = r.readReply()
				} else {
					r.cmd("DATA", "354")
					r.conn.Write([]byte(body))
					reply = r.readReply()
				}
				// Exactly one reply to the message: the next reply must
				// be the one to NOOP.
				r.cmd("NOOP", "250 2.0.0")
				r.cmd("QUIT", "221")
				checkSmuggling(t, h, wire, reply, before)
			})
		}
	}
}

// checkSmuggling checks the messages that the upstream accepted after the
// first before, and the upstream's wire.
func checkSmuggling(t *testing.T, h *harness, wire *wireLog, reply string, before int) {
	t.Helper()
	msgs := h.Gmail.Messages()[before:]
	if strings.HasPrefix(reply, "250") {
		msgs = h.Gmail.WaitMessages(t, before+1, 5*time.Second)[before:]
	} else if !strings.HasPrefix(reply, "5") {
		t.Errorf("reply to the message %q, want 250 or a rejection with 5xx", reply)
	}
	if len(msgs) > 1 {
		t.Errorf("upstream accepted %d messages, want at most 1", len(msgs))
	}
	for _, m := range msgs {
		if m.From != testAccount || strings.Join(m.To, ",") != "a@example.org" {
			t.Errorf("upstream transaction from %q to %v", m.From, m.To)
		}
		if !bytes.Contains(m.Data, []byte("smuggled body")) {
			t.Errorf("message ended early upstream: %q", m.Data)
		}
	}

	for _, data := range wire.dataSections() {
		for i := 0; i < len(data); i++ {
			switch data[i] {
			case '\r':
				if i+1 >= len(data) || data[i+1] != '\n' {
					t.Errorf("upstream data has a bare CR at %d: %q", i, around(data, i))
				}
			case '\n':
				if i == 0 || data[i-1] != '\r' {
					t.Errorf("upstream data has a bare LF at %d: %q", i, around(data, i))
				}
			}
		}
		if strings.Contains(data, "\r\n.\r\n") || strings.HasPrefix(data, ".\r\n") {
			t.Errorf("upstream data holds an end-of-data line: %q", data)
		}
	}
}

func around(s string, i int) string {
	return s[max(0, i-10):min(len(s), i+10)]
}
