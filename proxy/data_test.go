package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"net/textproto"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// dotWriterOutput returns what net/textproto's DotWriter writes for the
// chunks, the message terminator included.
func dotWriterOutput(t *testing.T, chunks [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	w := textproto.NewWriter(bw).DotWriter()
	for _, c := range chunks {
		if _, err := w.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// dataWriterOutput returns what dataWriter writes for the chunks, read
// from the other end of a pipe that replies 250 to the end of data.
func dataWriterOutput(t *testing.T, chunks [][]byte) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	got := make(chan []byte, 1)
	go func() {
		defer server.Close()
		var all []byte
		buf := make([]byte, 4096)
		for !bytes.HasSuffix(all, []byte("\r\n.\r\n")) && !bytes.Equal(all, []byte(".\r\n")) {
			n, err := server.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
		}
		got <- all
		server.Write([]byte("250 2.0.0 OK\r\n"))
	}()

	w := &dataWriter{u: &upstream{conn: client}, out: stuffBuffers.Get().(*[]byte)}
	for _, c := range chunks {
		if _, err := w.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	text, err := w.close(time.Second, time.Second)
	if err != nil {
		t.Fatalf("close: %v", err)
	}
	if text != "2.0.0 OK" {
		t.Errorf("reply text = %q", text)
	}
	return <-got
}

func TestDataWriterMatchesDotWriter(t *testing.T) {
	cases := map[string][][]byte{
		"empty":                 nil,
		"one line":              {[]byte("Subject: x\r\n\r\nbody\r\n")},
		"no final newline":      {[]byte("body")},
		"leading dot":           {[]byte(".hidden\r\n..two\r\n")},
		"dot only":              {[]byte(".\r\n")},
		"bare LF":               {[]byte("a\nb\n.c\n")},
		"bare CR":               {[]byte("a\rb\r\r\nc\r")},
		"CRLF split":            {[]byte("line\r"), []byte("\n.next\r\n")},
		"dot after split LF":    {[]byte("line\r\n"), []byte(".dot\r\n")},
		"ends in CR":            {[]byte("x\r")},
		"long line":             {bytes.Repeat([]byte("x"), 70000)},
		"empty chunks":          {{}, []byte("a\r\n"), {}},
		"dot then split CR":     {[]byte("."), []byte("\r"), []byte("\n")},
		"CR CR LF and dot line": {[]byte("\r\r\n.\r\n")},
	}
	// Random messages over the bytes that matter, in random chunks.
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("\r\n.a")
	for i := range 200 {
		msg := make([]byte, rng.IntN(300))
		for j := range msg {
			msg[j] = alphabet[rng.IntN(len(alphabet))]
		}
		var chunks [][]byte
		for len(msg) > 0 {
			n := min(rng.IntN(20)+1, len(msg))
			chunks = append(chunks, msg[:n])
			msg = msg[n:]
		}
		cases["random "+string(rune('a'+i%26))+string(rune('0'+i/26))] = chunks
	}

	for name, chunks := range cases {
		t.Run(name, func(t *testing.T) {
			want := dotWriterOutput(t, chunks)
			got := dataWriterOutput(t, chunks)
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from textproto's DotWriter\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestDataWriterRejectedReply(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		defer server.Close()
		r := bufio.NewReader(server)
		for {
			line, err := r.ReadString('\n')
			if err != nil || line == ".\r\n" {
				break
			}
		}
		server.Write([]byte("552-5.3.4 Your message exceeded Google's message size limits.\r\n" +
			"552 5.3.4 Please visit https://support.google.com/mail/?p=MaxSizeError - gsmtp\r\n"))
	}()

	w := &dataWriter{u: &upstream{conn: client}, out: stuffBuffers.Get().(*[]byte)}
	w.Write([]byte("Subject: big\r\n\r\n"))
	_, err := w.close(time.Second, time.Second)
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("close: %v, want an SMTPError", err)
	}
	if se.Code != 552 || se.EnhancedCode != (smtp.EnhancedCode{5, 3, 4}) {
		t.Errorf("reply = %d %v", se.Code, se.EnhancedCode)
	}
	// The enhanced code is not repeated inside the message, as go-smtp's
	// client strips it too.
	want := "Your message exceeded Google's message size limits.\nPlease visit https://support.google.com/mail/?p=MaxSizeError - gsmtp"
	if se.Message != want {
		t.Errorf("message = %q, want %q", se.Message, want)
	}
}

func BenchmarkDataWriter(b *testing.B) {
	msg := bytes.Repeat([]byte(".0123456789012345678901234567890123456789012345678901234567890123456789\r\n"), 280)
	w := &dataWriter{u: &upstream{conn: discardConn{}}, out: stuffBuffers.Get().(*[]byte)}
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		w.Write(msg)
	}
}

func BenchmarkTextprotoDotWriter(b *testing.B) {
	msg := bytes.Repeat([]byte(".0123456789012345678901234567890123456789012345678901234567890123456789\r\n"), 280)
	w := textproto.NewWriter(bufio.NewWriter(discardConn{})).DotWriter()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		w.Write(msg)
	}
}

// discardConn is a net.Conn whose writes succeed and go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
