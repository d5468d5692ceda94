package proxy

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
)

const (
	traceUser     = "printer"
	tracePassword = "Tr4ce-Passw0rd-Planted"
	traceToken    = "ya29.a0TRACEDACCESSTOKEN0123456789"
)

// traceScript is one connection's conversation, as the writes of each
// side. A client entry is what the client sends.
type traceStep struct {
	client bool
	data   string
}

func runTrace(t *testing.T, clientReads bool, steps []traceStep, chunk int) string {
	t.Helper()
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tr := &tracer{log: log, clientReads: clientReads}
	for _, s := range steps {
		p := []byte(s.data)
		for len(p) > 0 {
			n := min(chunk, len(p))
			tr.feed(s.client, p[:n])
			p = p[n:]
		}
	}
	return out.String()
}

func checkNoSecret(t *testing.T, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("trace contains %q:\n%s", s, out)
		}
	}
}

func TestTraceRedactsClientCredentials(t *testing.T) {
	plain := b64("\x00" + traceUser + "\x00" + tracePassword)
	steps := []traceStep{
		{false, "220 localhost ESMTP Service Ready\r\n"},
		{true, "EHLO printer\r\n"},
		{false, "250-localhost\r\n250 AUTH PLAIN LOGIN\r\n"},
		{true, "AUTH PLAIN " + plain + "\r\n"},
		{false, "535 5.7.8 Authentication credentials invalid\r\n"},
		// Pipelined, without waiting for the empty challenge.
		{true, "AUTH PLAIN\r\n" + plain + "\r\n"},
		{false, "334 \r\n535 5.7.8 Authentication credentials invalid\r\n"},
		{true, "AUTH LOGIN " + b64(traceUser) + "\r\n"},
		{false, "334 UGFzc3dvcmQ6\r\n"},
		{true, b64(tracePassword) + "\r\n"},
		{false, "235 2.7.0 Authentication succeeded\r\n"},
		{true, "MAIL FROM:<scanner@example.com>\r\n"},
		{false, "250 2.0.0 Roger, accepting mail from <scanner@example.com>\r\n"},
		{true, "RCPT TO:<a@example.org>\r\n"},
		{false, "250 2.0.0 I'll make sure <a@example.org> gets this\r\n"},
		{true, "DATA\r\n"},
		{false, "354 2.0.0 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n"},
		{true, "Subject: password is " + tracePassword + "\r\n\r\nAUTH PLAIN " + plain + "\r\n.\r\n"},
		{false, "250 2.0.0 OK\r\n"},
		{true, "BDAT 40 LAST\r\n" + tracePassword + strings.Repeat("x", 40-len(tracePassword))},
		{false, "250 2.0.0 OK\r\n"},
		{true, "QUIT\r\n"},
		{false, "221 2.0.0 Bye\r\n"},
	}
	for _, chunk := range []int{1, 3, 7, 4096} {
		out := runTrace(t, true, steps, chunk)
		checkNoSecret(t, out, tracePassword, plain, b64(tracePassword))
		for _, want := range []string{
			`from=client line="EHLO printer"`,
			`line="AUTH PLAIN [initial response]"`,
			`line="AUTH LOGIN [initial response]"`,
			`line="[SASL response]"`,
			`line="MAIL FROM:<scanner@example.com>"`,
			`line="[message content: `,
			`line="[BDAT chunk: 40 bytes]"`,
			`line=QUIT`,
			`from=bridge line="221 2.0.0 Bye"`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("chunks of %d: trace lacks %s:\n%s", chunk, want, out)
			}
		}
	}
}

func TestTraceRedactsUpstreamXOAuth2(t *testing.T) {
	ir := b64("user=scanner@example.com\x01auth=Bearer " + traceToken + "\x01\x01")
	steps := []traceStep{
		{false, "220 smtp.gmail.com ESMTP - gsmtp\r\n"},
		{true, "EHLO bridge\r\n"},
		{false, "250-smtp.gmail.com at your service\r\n250 AUTH LOGIN PLAIN XOAUTH2\r\n"},
		{true, "AUTH XOAUTH2 " + ir + "\r\n"},
		{false, "334 " + b64(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`) + "\r\n"},
		{true, "\r\n"},
		{false, "535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 https://support.google.com/mail/?p=BadCredentials\r\n"},
		// The two-step form that long tokens take.
		{true, "AUTH XOAUTH2\r\n"},
		{false, "334 \r\n"},
		{true, ir + "\r\n"},
		{false, "235 2.7.0 Accepted\r\n"},
		{true, "MAIL FROM:<scanner@example.com> BODY=8BITMIME\r\n"},
		{false, "250 2.1.0 OK\r\n"},
	}
	for _, chunk := range []int{1, 5, 4096} {
		// Upstream, the bridge is the client and writes its lines.
		out := runTrace(t, false, steps, chunk)
		checkNoSecret(t, out, traceToken, ir, base64.StdEncoding.EncodeToString([]byte(traceToken)))
		for _, want := range []string{
			`from=bridge line="AUTH XOAUTH2 [initial response]"`,
			`line="AUTH XOAUTH2"`,
			`line="535 5.7.8 https://support.google.com/mail/?p=BadCredentials"`,
			`from=upstream line="235 2.7.0 Accepted"`,
			`line="MAIL FROM:<scanner@example.com> BODY=8BITMIME"`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("chunks of %d: trace lacks %s:\n%s", chunk, want, out)
			}
		}
	}
}

func TestTraceStopsAtStartTLS(t *testing.T) {
	out := runTrace(t, true, []traceStep{
		{true, "EHLO printer\r\n"},
		{false, "250 STARTTLS\r\n"},
		{true, "STARTTLS\r\n"},
		{false, "220 2.0.0 Ready to start TLS\r\n"},
		{true, "\x16\x03\x01 handshake bytes\r\nAUTH PLAIN " + b64("\x00u\x00"+tracePassword) + "\r\n"},
		{false, "\x16\x03\x03 server hello\r\n"},
	}, 4096)
	if !strings.Contains(out, "trace of this connection ends") {
		t.Errorf("trace does not say it ends:\n%s", out)
	}
	if strings.Contains(out, "handshake bytes") || strings.Contains(out, "server hello") {
		t.Errorf("trace goes on after STARTTLS:\n%s", out)
	}
}

func TestTraceBoundsLongLines(t *testing.T) {
	out := runTrace(t, true, []traceStep{
		{true, "NOOP " + strings.Repeat("y", 5000) + "\r\n"},
		{true, strings.Repeat("z", 3000)},
	}, 512)
	if strings.Count(out, "y") > maxTraceLine {
		t.Errorf("trace keeps more than %d bytes of a line", maxTraceLine)
	}
	if !strings.Contains(out, "more bytes]") {
		t.Errorf("trace does not count the dropped bytes:\n%s", out)
	}
}
