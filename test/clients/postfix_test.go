package clients

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bridgemail/bridge/internal/fakegmail"
)

// postfixTimeout bounds the start and the stop of Postfix.
const postfixTimeout = time.Minute

// postfixInstance is a Postfix mail system with a private configuration
// and queue, started with start-fg as a child of the test, that relays
// everything to the bridge with SASL.
type postfixInstance struct {
	postfix      string
	sendmailPath string
	// confDir is config_directory, dir the parent of the queue and data
	// directories.
	confDir, dir string
	logs         *logBuffer
	done         chan struct{}
}

// postfixMasterCF lists the services a relay-only Postfix needs, none
// chrooted, so that they read the private directories. There is no smtpd:
// the instance listens on no TCP port at all.
const postfixMasterCF = `pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// postfixMainCF returns main.cf for an instance under dir that relays to
// relay with SASL mechanism mech. An empty mydestination makes Postfix
// deliver nothing locally. The log goes to standard output, which start-fg
// supports. message_size_limit is raised from Postfix's default of
// 10240000 bytes to Gmail's SIZE, for the 25 MB attachment.
func postfixMainCF(dir, relay, mech string) string {
	return fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file = /dev/stdout
message_size_limit = 35882577
relayhost = %[2]s
smtp_tls_security_level = none
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:%[1]s/conf/sasl_passwd
smtp_sasl_security_options = noanonymous
smtp_sasl_mechanism_filter = %[3]s
`, dir, relay, mech)
}

// startPostfix writes the configuration of a Postfix instance that relays
// to p with SASL mechanism mech, starts it, and stops it when the test
// ends. Postfix must run as root: master binds its services and then runs
// them as mail_owner.
func startPostfix(t *testing.T, p *bridgeProc, mech string) *postfixInstance {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "Postfix runs only as root")
	}
	owner, err := user.Lookup("postfix")
	if err != nil {
		missing(t, "no postfix user: %v (the postfix package creates it)", err)
	}
	pf := &postfixInstance{postfix: requireTool(t, "postfix"), logs: newLogBuffer(), done: make(chan struct{})}

	// The daemons run as the postfix user and reach data_directory by its
	// path, so the path must be searchable; t.TempDir is mode 0700.
	pf.dir, err = os.MkdirTemp("", "bridge-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pf.dir) })
	pf.confDir = filepath.Join(pf.dir, "conf")
	for _, d := range []string{pf.dir, pf.confDir, filepath.Join(pf.dir, "queue"), filepath.Join(pf.dir, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(owner.Uid)
	if err := os.Chown(filepath.Join(pf.dir, "data"), uid, -1); err != nil {
		t.Fatal(err)
	}

	relay := "[" + p.Host + "]:" + p.Port
	files := map[string]struct {
		data string
		mode os.FileMode
	}{
		"main.cf":   {postfixMainCF(pf.dir, relay, mech), 0o644},
		"master.cf": {postfixMasterCF, 0o644},
		// The smtp client opens the map as root before it drops
		// privileges, so the password file stays private.
		"sasl_passwd": {relay + " " + testUser + ":" + testPassword + "\n", 0o600},
	}
	for name, f := range files {
		if err := os.WriteFile(filepath.Join(pf.confDir, name), []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	pf.sendmailPath = pf.postconf(t, "sendmail_path")
	pf.start(t)
	return pf
}

// postconf returns the value of a parameter of the instance.
func (pf *postfixInstance) postconf(t *testing.T, name string) string {
	t.Helper()
	postconf := filepath.Join(filepath.Dir(pf.postfix), "postconf")
	out, err := exec.Command(postconf, "-c", pf.confDir, "-h", name).CombinedOutput()
	if err != nil {
		t.Fatalf("postconf %s: %v\n%s", name, err, out)
	}
	return strings.TrimSpace(string(out))
}

var postfixStartedRE = regexp.MustCompile(`postfix/master\[\d+\]: daemon started`)

// start runs `postfix start-fg`, which keeps the master in the foreground
// with its log on standard output, and waits for the master to start.
func (pf *postfixInstance) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(pf.postfix, "-c", pf.confDir, "start-fg")
	cmd.Stdout = pf.logs
	cmd.Stderr = pf.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(pf.done)
	}()
	t.Cleanup(func() { pf.stop(t, cmd) })

	if _, err := pf.logs.waitFor(postfixStartedRE, 1, postfixTimeout, pf.done); err != nil {
		t.Fatalf("postfix did not start: %v\nlog:\n%s", err, pf.logs)
	}
}

// stop runs `postfix stop` and waits for start-fg to return. If Postfix
// does not stop in time, it kills the master by the PID in its queue
// directory, and then the start-fg process.
func (pf *postfixInstance) stop(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), postfixTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, pf.postfix, "-c", pf.confDir, "stop").CombinedOutput(); err != nil {
		t.Errorf("postfix stop: %v\n%s", err, out)
	}
	select {
	case <-pf.done:
	case <-ctx.Done():
		t.Errorf("postfix did not stop within %v", postfixTimeout)
		pf.killMaster(t)
		cmd.Process.Kill()
		<-pf.done
	}
	if t.Failed() {
		t.Logf("postfix log:\n%s", pf.logs)
	}
}

func (pf *postfixInstance) killMaster(t *testing.T) {
	t.Helper()
	pid, err := pf.masterPID()
	if err != nil {
		t.Log(err)
		return
	}
	if proc, err := os.FindProcess(pid); err == nil {
		proc.Kill()
	}
}

// masterPID reads the PID of the master from the queue directory.
func (pf *postfixInstance) masterPID() (int, error) {
	data, err := os.ReadFile(filepath.Join(pf.dir, "queue", "pid", "master.pid"))
	if err != nil {
		return 0, fmt.Errorf("reading the master's PID: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("invalid master PID %q", data)
	}
	return pid, nil
}

// tcpListeners returns the local addresses, in the hexadecimal form of
// /proc/net/tcp, of the TCP sockets that process pid listens on.
func tcpListeners(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}

	var addrs []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			// sl local_address rem_address st ... uid timeout inode
			f := strings.Fields(line)
			const listen = "0A"
			if len(f) > 9 && f[3] == listen && inodes[f[9]] {
				addrs = append(addrs, f[1])
			}
		}
	}
	return addrs
}

// sendmail hands m to the instance's sendmail command, which queues it
// for delivery. -i keeps a line with a single dot from ending the input.
func (pf *postfixInstance) sendmail(t *testing.T, m corpusMessage) {
	t.Helper()
	args := append([]string{"-C", pf.confDir, "-i", "-f", m.From, "--"}, m.To...)
	runClient(t, m.Path, pf.sendmailPath, args...)
}

// receivedRE matches the trace header that Postfix's cleanup adds to mail
// submitted with sendmail, such as
// "Received: by postfix.test (Postfix, from userid 0)\r\n\tid 4F2...; <date>\r\n".
var receivedRE = regexp.MustCompile(`\AReceived: by postfix\.test \(Postfix, from userid \d+\)\r\n\tid [0-9A-Za-z]+; [^\r\n]+\r\n`)

func TestPostfix(t *testing.T) {
	t.Parallel()
	p := startBridge(t)
	// The check below finds the bridge's own listener, so it can fail.
	if addrs := tcpListeners(t, p.cmd.Process.Pid); len(addrs) != 1 {
		t.Fatalf("bridge listens on TCP %q, want its one listener", addrs)
	}
	for _, mech := range []string{"plain", "login"} {
		t.Run(mech, func(t *testing.T) {
			pf := startPostfix(t, p, mech)
			// The master opens the sockets of every service in
			// master.cf, and this one has no smtpd.
			pid, err := pf.masterPID()
			if err != nil {
				t.Fatal(err)
			}
			if addrs := tcpListeners(t, pid); len(addrs) != 0 {
				t.Errorf("Postfix listens on TCP %q", addrs)
			}
			msgs := loadCorpus(t)
			if mech == "plain" {
				// Once is enough for the slowest message.
				msgs = append(msgs, bigMessage(t))
			}
			for _, m := range msgs {
				t.Run(m.Name, func(t *testing.T) {
					skip := len(p.Gmail.Messages())
					pf.sendmail(t, m)
					checkPostfixDelivery(t, p, skip, m, strings.ToUpper(mech))
				})
			}
		})
	}
}

// checkPostfixDelivery waits until every recipient of m has arrived
// upstream, and checks each message that carried them. Postfix sends at
// most smtp_destination_recipient_limit (50 by default) recipients per
// transaction, so the 60 recipients of one message arrive in two.
func checkPostfixDelivery(t *testing.T, p *bridgeProc, skip int, m corpusMessage, mech string) {
	t.Helper()
	var msgs []fakegmail.Message
	var rcpts []string
	for len(rcpts) < len(m.To) {
		msgs = newMessages(t, p.Gmail, skip, len(msgs)+1)
		rcpts = rcpts[:0]
		for _, got := range msgs {
			rcpts = append(rcpts, got.To...)
		}
	}
	slices.Sort(rcpts)
	want := slices.Sorted(slices.Values(m.To))
	if !slices.Equal(rcpts, want) {
		t.Errorf("recipients %q, want %q", rcpts, want)
	}

	for _, got := range msgs {
		// Postfix adds its Received header on top; the rest must be the
		// message as it was handed to sendmail.
		added := receivedRE.Find(got.Data)
		if added == nil {
			t.Errorf("upstream data does not start with Postfix's Received header:\n%q",
				got.Data[:min(len(got.Data), 300)])
			continue
		}
		assertSameData(t, bytes.TrimPrefix(got.Data, added), m.Data)
		if got.From != m.From {
			t.Errorf("envelope sender %q, want %q", got.From, m.From)
		}
		if got.MailOptions.UTF8 != m.UTF8 {
			t.Errorf("upstream MAIL SMTPUTF8 = %v, want %v", got.MailOptions.UTF8, m.UTF8)
		}
	}
	for i := range msgs {
		line := p.waitLogN(t, relayedRE, skip+1+i, time.Minute)
		if got := p.mechanism(t, line); got != mech {
			t.Errorf("Postfix authenticated with %s, want %s", got, mech)
		}
	}
}
