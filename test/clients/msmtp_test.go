package clients

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridgemail/bridge/internal/bridgetest"
)

// writeMsmtpConfig writes an msmtp configuration with one account per
// SASL mechanism and returns its path. msmtp rejects a configuration file
// that contains a password and that others can read, hence mode 0600.
func writeMsmtpConfig(t *testing.T, p *bridgeProc) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "defaults\nhost %s\nport %s\ntls off\nauth on\nuser %s\npassword %s\n"+
		"from %s\ndomain msmtp.test\ntimeout 120\n", p.Host, p.Port, testUser, testPassword, testAccount)
	for _, mech := range []string{"plain", "login"} {
		fmt.Fprintf(&b, "\naccount %s\nauth %s\n", mech, mech)
	}
	path := filepath.Join(t.TempDir(), "msmtprc")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMsmtp(t *testing.T) {
	t.Parallel()
	msmtp := requireTool(t, "msmtp")
	p := startBridge(t, bridgetest.Options{})
	conf := writeMsmtpConfig(t, p)
	for _, mech := range []string{"plain", "login"} {
		for _, m := range loadCorpus(t) {
			t.Run(mech+"/"+m.Name, func(t *testing.T) {
				skip := len(p.Gmail.Messages())
				args := append([]string{"--file", conf, "--account", mech, "-f", m.From, "--"}, m.To...)
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
