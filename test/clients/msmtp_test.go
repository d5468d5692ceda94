package clients

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeMsmtpConfig writes the msmtp configuration that the README shows,
// with p's port and SASL mechanism mech, and returns its path. msmtp
// rejects a configuration file that contains a password and that others
// can read, hence mode 0600.
func writeMsmtpConfig(t *testing.T, p *bridgeProc, mech string) string {
	t.Helper()
	conf := fmt.Sprintf(`account bridge
host %s
port %s
tls off
auth %s
user %s
password %s
from %s
domain msmtp.test
account default : bridge
`, p.Host, p.Port, mech, testUser, testPassword, testAccount)
	path := filepath.Join(t.TempDir(), "msmtprc")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMsmtp(t *testing.T) {
	t.Parallel()
	msmtp := requireTool(t, "msmtp")
	p := startBridge(t)
	for _, mech := range []string{"plain", "login"} {
		conf := writeMsmtpConfig(t, p, mech)
		for _, m := range loadCorpus(t) {
			t.Run(mech+"/"+m.Name, func(t *testing.T) {
				skip := len(p.Gmail.Messages())
				args := append([]string{"--file", conf, "-f", m.From, "--"}, m.To...)
				runClient(t, m.Path, msmtp, args...)
				// msmtp 1.8.23 sends UTF-8 addresses in RCPT without
				// SMTPUTF8 on MAIL. The bridge relays both as they came,
				// so the upstream's reply to RCPT decides.
				m.UTF8 = false
				expectOneMessage(t, p, skip, m, strings.ToUpper(mech))
			})
		}
	}
}
