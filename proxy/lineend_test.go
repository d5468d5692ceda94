package proxy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/bridgemail/bridge/internal/bridgetest"
)

func TestCRLFWriter(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		repaired       int64
	}{
		{"crlf unchanged", "a\r\nb\r\n", "a\r\nb\r\n", 0},
		{"bare lf", "a\nb\n", "a\r\nb\r\n", 2},
		{"bare cr", "a\rb\r\n", "a\r\nb\r\n", 1},
		{"cr cr lf", "a\r\r\n", "a\r\n\r\n", 1},
		{"lf cr", "a\n\rb\r\n", "a\r\n\r\nb\r\n", 2},
		{"empty lines", "\n\n\r\n", "\r\n\r\n\r\n", 2},
		{"no line ending", "abc", "abc", 0},
		{"trailing bare cr", "abc\r", "abc\r\n", 0},
		{"lf dot lf", "x\n.\ny\r\n", "x\r\n.\r\ny\r\n", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Every split of the input into two writes gives the same
			// output, so a CR at the end of one write and an LF at the
			// start of the next stay one line ending.
			for split := 0; split <= len(tc.in); split++ {
				var out bytes.Buffer
				w := &crlfWriter{w: &out}
				for _, part := range []string{tc.in[:split], tc.in[split:]} {
					n, err := w.Write([]byte(part))
					if err != nil || n != len(part) {
						t.Fatalf("split %d: Write = %d, %v; want %d, nil", split, n, err, len(part))
					}
				}
				if out.String() != tc.want {
					t.Errorf("split %d: output %q, want %q", split, out.String(), tc.want)
				}
				if w.repaired != tc.repaired {
					t.Errorf("split %d: repaired = %d, want %d", split, w.repaired, tc.repaired)
				}
			}
		})
	}
}

// failAfterWriter accepts room bytes and then fails.
type failAfterWriter struct{ room int }

var errFull = errors.New("full")

func (w *failAfterWriter) Write(p []byte) (int, error) {
	if len(p) > w.room {
		n := w.room
		w.room = 0
		return n, errFull
	}
	w.room -= len(p)
	return len(p), nil
}

func TestCRLFWriterPassesWriteError(t *testing.T) {
	w := &crlfWriter{w: &failAfterWriter{room: 3}}
	n, err := w.Write([]byte("ab\ncd\n"))
	if !errors.Is(err, errFull) {
		t.Fatalf("err = %v, want errFull", err)
	}
	if n > 3 {
		t.Errorf("n = %d, more than the 3 bytes written", n)
	}
}

// TestBareLineEndingsNeverEndData sends the line-ending sequences that an
// SMTP smuggling attack relies on inside the data, followed by what would
// be a second transaction. The upstream must get one message, with the
// rest of the data as its body, and nothing else.
func TestBareLineEndingsNeverEndData(t *testing.T) {
	const (
		head     = "From: scanner@example.com\r\nSubject: scan\r\n\r\nbefore"
		smuggled = "MAIL FROM:<ceo@example.net>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n" +
			"Subject: smuggled\r\n\r\nsmuggled body\r\n"
	)
	for _, tc := range []struct {
		name, seq string
		// want is what arrives upstream in place of seq.
		want string
	}{
		{"lf dot lf", "\n.\n", "\r\n.\r\n"},
		{"cr dot lf", "\r.\n", "\r\n.\r\n"},
		{"lf dot crlf", "\n.\r\n", "\r\n.\r\n"},
		// go-smtp's server takes CRLF "." as the start of a dot-stuffed
		// line and removes the dot, so the bare LF is a line of its own.
		{"crlf dot lf", "\r\n.\n", "\r\n\r\n"},
		{"cr dot cr", "\r.\r", "\r\n.\r\n"},
		{"lf dot cr lf", "\n.\r\r\n", "\r\n.\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, bridgetest.Options{})
			r := h.raw(t)
			r.cmd("EHLO printer", "250")
			r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
			r.cmd("MAIL FROM:<"+testAccount+">", "250")
			r.cmd("RCPT TO:<a@example.org>", "250")
			r.cmd("DATA", "354")
			if _, err := r.conn.Write([]byte(head + tc.seq + smuggled + ".\r\n")); err != nil {
				t.Fatal(err)
			}
			r.expect("250 ")
			r.cmd("QUIT", "221")

			msgs := h.Gmail.WaitMessages(t, 1, 5*time.Second)
			want := head + tc.want + smuggled
			if got := string(msgs[0].Data); got != want {
				t.Errorf("upstream data %q, want %q", got, want)
			}
			if len(msgs[0].To) != 1 || msgs[0].To[0] != "a@example.org" {
				t.Errorf("recipients = %v, want [a@example.org]", msgs[0].To)
			}
			// Every command of the session has had its reply, so no
			// later message can arrive.
			if n := len(h.Gmail.Messages()); n != 1 {
				t.Errorf("upstream got %d messages, want 1", n)
			}
			if !strings.Contains(h.logs.String(), "relayed as CRLF") {
				t.Errorf("no log line about the repaired line endings")
			}
		})
	}
}

// BenchmarkCRLFWriter measures the repair pass on a message that needs
// none, base64 lines of 76 characters, in the 32 KiB chunks that the
// session copies.
func BenchmarkCRLFWriter(b *testing.B) {
	line := strings.Repeat("QUJD", 19) + "\r\n"
	chunk := []byte(strings.Repeat(line, 32*1024/len(line)))
	w := &crlfWriter{w: io.Discard}
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := w.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDataEndingInBareLFTimesOut sends a message that ends with LF "." LF,
// as a sender that uses bare LF throughout would. That is no end of data,
// so the bridge waits for read_timeout, then replies 451 with the reason
// and relays nothing.
func TestDataEndingInBareLFTimesOut(t *testing.T) {
	h := newHarness(t, bridgetest.Options{ExtraYAML: "limits:\n  read_timeout: 1s\n"})
	r := h.raw(t)
	r.cmd("EHLO printer", "250")
	r.cmd("AUTH PLAIN "+b64("\x00"+testUser+"\x00"+testPassword), "235")
	r.cmd("MAIL FROM:<"+testAccount+">", "250")
	r.cmd("RCPT TO:<a@example.org>", "250")
	r.cmd("DATA", "354")
	if _, err := r.conn.Write([]byte("Subject: scan\n\nbody\n.\n")); err != nil {
		t.Fatal(err)
	}
	reply := r.expect("451 4.4.2 ")
	if !strings.Contains(reply, "no end of data (CRLF . CRLF) within 1s") {
		t.Errorf("reply %q does not give the reason", reply)
	}
	if n := len(h.Gmail.Messages()); n != 0 {
		t.Errorf("upstream got %d messages, want 0", n)
	}
	if !strings.Contains(h.logs.String(), "no end of data within read_timeout") {
		t.Errorf("no warning in the log:\n%s", h.logs)
	}
}
