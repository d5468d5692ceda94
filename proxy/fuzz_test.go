package proxy

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bridgemail/bridge/internal/bridgetest"
)

// fuzzYAML keeps each iteration fast and bounded: no throttle delays for
// the many failed logins, and short upstream limits.
const fuzzYAML = `throttle:
  free_failures: 1000000000
  lockout_after: 1000000000
limits:
  read_timeout: 5s
  upstream_timeout: 2s
  upstream_data_timeout: 2s
  dial_timeout: 2s
  max_message_bytes: 65536
`

// fuzzSessionTimeout bounds one iteration; a session that has not ended by
// then counts as a hang.
const fuzzSessionTimeout = 20 * time.Second

// fuzzConverse sends input on a new connection, closes the sending side,
// and returns every byte the bridge sent until it closed the connection.
func fuzzConverse(t *testing.T, h *harness, input []byte) string {
	t.Helper()
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(fuzzSessionTimeout))

	written := make(chan error, 1)
	go func() {
		_, err := conn.Write(input)
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		written <- err
	}()
	var out bytes.Buffer
	_, err = out.ReadFrom(conn)
	<-written
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("session did not end within %v; replies so far:\n%s", fuzzSessionTimeout, out.String())
	}
	return out.String()
}

// checkFuzzReplies fails on signs of a bug in what the bridge replied or
// logged for one session: a recovered panic, go-smtp's reply to a plain
// error, or a message relayed without a successful AUTH.
func checkFuzzReplies(t *testing.T, h *harness, replies string, relayed int) {
	t.Helper()
	if logs := h.logs.String(); strings.Contains(logs, "panic") {
		t.Fatalf("the bridge panicked:\n%s", logs)
	}
	for _, line := range strings.Split(replies, "\r\n") {
		if strings.HasPrefix(line, "554 5.0.0 Error: transaction failed") ||
			strings.HasPrefix(line, "421 4.0.0 Internal server error") {
			t.Errorf("reply %q comes from an error that reply.go did not map", line)
		}
	}
	if relayed > 0 && !strings.Contains(replies, "\r\n235 ") {
		t.Errorf("%d messages relayed without a successful AUTH; replies:\n%s", relayed, replies)
	}
}

// checkRelayedMatchesReplies fails unless the client got one 250 for each
// message the upstream accepted, and no other. Only the reply to the end
// of data carries the fake Gmail's " - gsmtp" text after a 250.
func checkRelayedMatchesReplies(t *testing.T, replies string, relayed int) {
	t.Helper()
	accepted := 0
	for _, line := range strings.Split(replies, "\r\n") {
		if strings.HasPrefix(line, "250 ") && strings.Contains(line, " - gsmtp") {
			accepted++
		}
	}
	if accepted != relayed {
		t.Errorf("client got %d replies of 250 to the end of data, upstream accepted %d messages; replies:\n%s",
			accepted, relayed, replies)
	}
}

// FuzzSMTPSession feeds a raw command stream into a session of a bridge
// whose upstream is the fake submission server. The seeds log in, so that
// mutations reach MAIL, DATA and BDAT.
func FuzzSMTPSession(f *testing.F) {
	h := newHarness(f, bridgetest.Options{ExtraYAML: fuzzYAML})
	f.Fuzz(func(t *testing.T, input []byte) {
		h.logs.Reset()
		before := len(h.Gmail.Messages())
		replies := fuzzConverse(t, h, input)
		relayed := len(h.Gmail.Messages()) - before
		checkFuzzReplies(t, h, replies, relayed)
		checkRelayedMatchesReplies(t, replies, relayed)
	})
}

// FuzzAuthPlain sends any AUTH PLAIN payload, base64-encoded as RFC 4954
// requires. Only the test user's exact credentials may log in.
func FuzzAuthPlain(f *testing.F) {
	h := newHarness(f, bridgetest.Options{ExtraYAML: fuzzYAML})
	f.Fuzz(func(t *testing.T, payload []byte) {
		h.logs.Reset()
		ir := b64(string(payload))
		if ir == "" {
			// An empty initial response is sent as "=".
			ir = "="
		}
		in := "EHLO fuzz\r\nAUTH PLAIN " + ir + "\r\nQUIT\r\n"
		skipLongLines(t, h, in)
		replies := fuzzConverse(t, h, []byte(in))
		valid := string(payload) == "\x00"+testUser+"\x00"+testPassword ||
			string(payload) == testUser+"\x00"+testUser+"\x00"+testPassword
		checkLogin(t, h, replies, valid)
	})
}

// FuzzAuthLogin sends any username and password through AUTH LOGIN, both
// with the username as the initial response and without it.
func FuzzAuthLogin(f *testing.F) {
	h := newHarness(f, bridgetest.Options{ExtraYAML: fuzzYAML})
	f.Fuzz(func(t *testing.T, username, password []byte, initial bool) {
		h.logs.Reset()
		var in string
		if initial {
			in = "EHLO fuzz\r\nAUTH LOGIN " + b64(string(username)) + "\r\n"
		} else {
			in = "EHLO fuzz\r\nAUTH LOGIN\r\n" + b64(string(username)) + "\r\n"
		}
		if len(username) == 0 && initial {
			// An empty initial response is sent as "=".
			in = "EHLO fuzz\r\nAUTH LOGIN =\r\n"
		}
		in += b64(string(password)) + "\r\nQUIT\r\n"
		skipLongLines(t, h, in)
		replies := fuzzConverse(t, h, []byte(in))
		valid := string(username) == testUser && string(password) == testPassword
		checkLogin(t, h, replies, valid)
	})
}

// skipLongLines skips an input with a command line longer than go-smtp's
// line limit, which ends the connection with 500 5.4.0 by design, so the
// session cannot reach QUIT.
func skipLongLines(t *testing.T, h *harness, in string) {
	h.srv.mu.Lock()
	front, _ := h.srv.listeners[0].current()
	h.srv.mu.Unlock()
	limit := front.smtp.MaxLineLength
	for _, line := range strings.Split(in, "\r\n") {
		if len(line)+2 > limit {
			t.Skipf("line of %d octets is over the limit of %d", len(line)+2, limit)
		}
	}
}

func checkLogin(t *testing.T, h *harness, replies string, valid bool) {
	t.Helper()
	checkFuzzReplies(t, h, replies, 0)
	if ok := strings.Contains(replies, "\r\n235 "); ok != valid {
		t.Fatalf("login succeeded: %v, want %v; replies:\n%s", ok, valid, replies)
	}
	if !strings.Contains(replies, "\r\n221 ") {
		t.Errorf("session did not reach QUIT; replies:\n%s", replies)
	}
}
