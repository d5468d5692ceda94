package clients

import (
	"strings"
	"testing"
)

func swaksArgs(p *bridgeProc, mech string, m corpusMessage) []string {
	return []string{
		"--server", p.Addr,
		"--helo", "swaks.test",
		"--auth", mech,
		"--auth-user", testUser,
		"--auth-password", testPassword,
		"--from", m.From,
		"--to", strings.Join(m.To, ","),
		"--data", "@" + m.Path,
		// The transcript shows a summary instead of the data.
		"--suppress-data",
		"--timeout", "120",
	}
}

func TestSwaks(t *testing.T) {
	t.Parallel()
	swaks := requireTool(t, "swaks")
	p := startBridge(t)
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		// swaks 20201014 has no SMTPUTF8 support.
		for _, m := range asciiCorpus(t) {
			t.Run(mech+"/"+m.Name, func(t *testing.T) {
				skip := len(p.Gmail.Messages())
				runClient(t, "", swaks, swaksArgs(p, mech, m)...)
				// swaks's data fixup appends CRLF "." CRLF to the data
				// even when it already ends in CRLF, so the message
				// gains an empty last line before it leaves swaks.
				m.Data = append(m.Data, "\r\n"...)
				expectOneMessage(t, p, skip, m, mech)
			})
		}
	}
}
