package clients

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bridgemail/bridge/internal/fakegmail"
)

// clientTimeout bounds one run of an external client, the 25 MB message
// included.
const clientTimeout = 3 * time.Minute

// runClient runs an external program with stdin from the file at
// stdinPath (none if empty) and fails the test unless it exits 0. It
// returns the program's combined output.
func runClient(t *testing.T, stdinPath string, name string, args ...string) string {
	t.Helper()
	return runClientEnv(t, nil, stdinPath, name, args...)
}

// runClientEnv is runClient with env added to the environment.
func runClientEnv(t *testing.T, env []string, stdinPath string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdinPath != "" {
		f, err := os.Open(stdinPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(redact(args), " "), err, tail(out))
	}
	return string(out)
}

// redact hides the test password in a command line that is logged.
func redact(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, testPassword, "PASSWORD")
	}
	return out
}

// tail returns the end of a long output, which is where clients report
// what failed.
func tail(out []byte) string {
	const max = 8000
	if len(out) > max {
		return "...\n" + string(out[len(out)-max:])
	}
	return string(out)
}

// expectOneMessage checks that exactly one message arrived upstream after
// the first skip, that it is m, byte for byte, and that the client
// authenticated with mech.
func expectOneMessage(t *testing.T, p *bridgeProc, skip int, m corpusMessage, mech string) fakegmail.Message {
	t.Helper()
	got := newMessages(t, p.Gmail, skip, 1)[0]
	assertSameData(t, got.Data, m.Data)
	checkEnvelope(t, got, m)
	// The client had the reply to its data before it exited, and that
	// reply came after the upstream's, so any second copy would be here.
	if n := len(p.Gmail.Messages()); n != skip+1 {
		t.Errorf("upstream has %d messages, want %d", n, skip+1)
	}

	// The bridge logs the size of the data that it read from the client,
	// so the upstream got as many octets as the client sent.
	line := p.waitLogN(t, relayedRE, skip+1, time.Minute)
	size, _ := strconv.Atoi(relayedRE.FindStringSubmatch(line)[2])
	if size != len(got.Data) {
		t.Errorf("bridge read %d octets from the client and sent %d upstream", size, len(got.Data))
	}
	if got := p.mechanism(t, line); got != mech {
		t.Errorf("client authenticated with %s, want %s", got, mech)
	}
	if p.logs.count(repairedRE) > 0 {
		t.Errorf("bridge repaired line endings of a message sent with CRLF")
	}
	return got
}

var (
	relayedRE  = regexp.MustCompile(`msg="message relayed" session=(\S+) .* size=(\d+) `)
	repairedRE = regexp.MustCompile(`relayed as CRLF`)
)

// mechanism returns the SASL mechanism of the session that logged line.
func (p *bridgeProc) mechanism(t *testing.T, line string) string {
	t.Helper()
	session := relayedRE.FindStringSubmatch(line)[1]
	re := regexp.MustCompile(`msg=authenticated session=` + regexp.QuoteMeta(session) + ` .*mechanism=(\S+)`)
	auth := p.waitLog(t, re, time.Minute)
	return re.FindStringSubmatch(auth)[1]
}

func checkEnvelope(t *testing.T, got fakegmail.Message, m corpusMessage) {
	t.Helper()
	if got.From != m.From {
		t.Errorf("envelope sender %q, want %q", got.From, m.From)
	}
	if !slices.Equal(got.To, m.To) {
		t.Errorf("recipients %q, want %q", got.To, m.To)
	}
	if got.User != testAccount {
		t.Errorf("upstream AUTH as %q, want %q", got.User, testAccount)
	}
	if got.MailOptions.UTF8 != m.UTF8 {
		t.Errorf("upstream MAIL SMTPUTF8 = %v, want %v", got.MailOptions.UTF8, m.UTF8)
	}
}
