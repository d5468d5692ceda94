// Package clients tests the built bridge binary with the SMTP clients that
// users point at it: swaks, curl, msmtp, Python's smtplib, Postfix as a
// relay client, and printer-style sessions over raw TCP. Each test starts
// `bridge serve --config FILE` as a subprocess between the fake OAuth
// provider and the fake Gmail, and checks that every message arrives
// upstream byte for byte as the client sent it.
//
// A client that is not installed skips its tests, unless the environment
// variable CI is set: then it fails them, so that CI cannot pass without
// running them. .ci/run installs the clients.
package clients

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var (
	// workDir is a directory for the whole run, removed at its end.
	workDir string
	// bridgeBin is the bridge binary that TestMain builds in workDir.
	bridgeBin string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var err error
	workDir, err = os.MkdirTemp("", "bridge-clients-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating work directory:", err)
		return 1
	}
	defer os.RemoveAll(workDir)

	bridgeBin = filepath.Join(workDir, "bridge")
	args := []string{"build", "-o", bridgeBin}
	if raceEnabled {
		// The binary gets the race detector too, so that these tests
		// find races in the real server as the in-process tests do.
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/bridgemail/bridge/cmd/bridge")...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the bridge binary:", err)
		return 1
	}
	return m.Run()
}

// requireTool returns the path of an external program. When the program
// is missing it skips the test, or fails it when CI is set.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		// Root's PATH has /usr/sbin, other users' often not.
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if p := filepath.Join(dir, name); isExecutable(p) {
				return p
			}
		}
		missing(t, "%s is not installed (.ci/run installs it with apt-get)", name)
	}
	return path
}

// missing skips the test, or fails it when the environment variable CI is
// set.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}
