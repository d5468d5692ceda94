package clients

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// smtplibEnv passes the password to testdata/smtplib_send.py.
var smtplibEnv = []string{"SMTP_PASSWORD=" + testPassword}

// smtplibArgs returns the arguments of testdata/smtplib_send.py for m.
func smtplibArgs(p *bridgeProc, auth []string, m corpusMessage) []string {
	args := []string{filepath.Join("testdata", "smtplib_send.py"),
		"--host", p.Host, "--port", p.Port, "--user", testUser, "--from", m.From}
	args = append(args, auth...)
	for _, to := range m.To {
		args = append(args, "--to", to)
	}
	if m.UTF8 {
		args = append(args, "--smtputf8")
	}
	return append(args, m.Path)
}

func TestSmtplib(t *testing.T) {
	t.Parallel()
	python := pythonPath(t)
	p := startBridge(t)
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		for _, m := range loadCorpus(t) {
			t.Run(mech+"/"+m.Name, func(t *testing.T) {
				skip := len(p.Gmail.Messages())
				runClientEnv(t, smtplibEnv, "", python, smtplibArgs(p, []string{"--mechanism", mech}, m)...)
				expectOneMessage(t, p, skip, m, mech)
			})
		}
	}
}

// TestSmtplibAuthForms covers the other ways smtplib authenticates: the
// choice that SMTP.login makes, and AUTH without an initial response, which
// waits for the server's challenge.
func TestSmtplibAuthForms(t *testing.T) {
	t.Parallel()
	python := pythonPath(t)
	p := startBridge(t)
	m := loadCorpus(t)[0]
	for _, auth := range []struct {
		name, mech string
		args       []string
	}{
		// SMTP.login picks PLAIN, the first of its preferences that the
		// bridge offers.
		{"login", "PLAIN", nil},
		{"PLAIN-no-initial-response", "PLAIN", []string{"--mechanism", "PLAIN", "--no-initial-response"}},
		{"LOGIN-no-initial-response", "LOGIN", []string{"--mechanism", "LOGIN", "--no-initial-response"}},
	} {
		t.Run(auth.name, func(t *testing.T) {
			skip := len(p.Gmail.Messages())
			runClientEnv(t, smtplibEnv, "", python, smtplibArgs(p, auth.args, m)...)
			expectOneMessage(t, p, skip, m, auth.mech)
		})
	}
}

// pythonPath returns the path of the Python interpreter itself, which
// starts faster than a version manager's wrapper script of that name.
func pythonPath(t *testing.T) string {
	t.Helper()
	python := requireTool(t, "python3")
	out, err := exec.Command(python, "-c", "import sys; print(sys.executable)").Output()
	if path := strings.TrimSpace(string(out)); err == nil && isExecutable(path) {
		return path
	}
	return python
}
