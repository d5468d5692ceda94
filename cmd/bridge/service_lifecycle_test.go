package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/internal/bridgetest"
	"github.com/bridgemail/bridge/internal/fakegmail"
	"github.com/bridgemail/bridge/internal/testcert"
)

func TestVersionFromLdflags(t *testing.T) {
	out, _, code := runBridge(t, "", "version")
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if want := "bridge " + testVersion + "\n"; out != want {
		t.Errorf("output = %q, want %q", out, want)
	}
}

// notifySocket is a datagram socket that plays systemd's part.
type notifySocket struct {
	t    *testing.T
	conn *net.UnixConn
	name string
}

func listenNotify(t *testing.T, name string) *notifySocket {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{t: t, conn: conn, name: name}
}

// next returns the next message that is not a watchdog keep-alive, and
// counts the keep-alives it skipped.
func (n *notifySocket) next(watchdogs *int) string {
	n.t.Helper()
	buf := make([]byte, 4096)
	for {
		n.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		size, err := n.conn.Read(buf)
		if err != nil {
			n.t.Fatalf("reading from NOTIFY_SOCKET: %v", err)
		}
		msg := string(buf[:size])
		if msg == "WATCHDOG=1\n" {
			*watchdogs++
			continue
		}
		return msg
	}
}

func TestNotifySocketLifecycle(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	seedStore(t, env)
	sock := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	p := startBridgeNoWait(t, env, "NOTIFY_SOCKET="+sock.name, "WATCHDOG_USEC=200000")

	var watchdogs int
	if msg := sock.next(&watchdogs); !strings.HasPrefix(msg, "READY=1\nSTATUS=serving on 127.0.0.1:") {
		t.Fatalf("first message = %q, want READY=1 with a status", msg)
	}
	// Two keep-alives come first, so that the reload below happens while
	// the watchdog runs.
	for watchdogs < 2 {
		sock.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		n, err := sock.conn.Read(buf)
		if err != nil {
			t.Fatalf("waiting for WATCHDOG=1: %v", err)
		}
		if string(buf[:n]) != "WATCHDOG=1\n" {
			t.Fatalf("message %q before any reload or stop", buf[:n])
		}
		watchdogs++
	}

	p.signal(syscall.SIGHUP)
	msg := sock.next(&watchdogs)
	lines := strings.Split(strings.TrimSuffix(msg, "\n"), "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("message after SIGHUP = %q, want RELOADING=1 and MONOTONIC_USEC", msg)
	}
	if usec, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64); err != nil || usec <= 0 {
		t.Errorf("MONOTONIC_USEC in %q is not a positive number", lines[1])
	}
	if msg := sock.next(&watchdogs); !strings.HasPrefix(msg, "READY=1\n") {
		t.Fatalf("message after the reload = %q, want READY=1", msg)
	}

	p.signal(syscall.SIGTERM)
	if msg := sock.next(&watchdogs); !strings.HasPrefix(msg, "STOPPING=1\n") {
		t.Fatalf("message after SIGTERM = %q, want STOPPING=1", msg)
	}
	if err := p.wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	seedStore(t, env)
	sock := listenNotify(t, fmt.Sprintf("@bridge-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	p := startBridgeNoWait(t, env, "NOTIFY_SOCKET="+sock.name)

	var watchdogs int
	if msg := sock.next(&watchdogs); !strings.HasPrefix(msg, "READY=1\n") {
		t.Fatalf("first message = %q, want READY=1", msg)
	}
	p.signal(syscall.SIGINT)
	if msg := sock.next(&watchdogs); !strings.HasPrefix(msg, "STOPPING=1\n") {
		t.Fatalf("message after SIGINT = %q, want STOPPING=1", msg)
	}
	if err := p.wait(); err != nil {
		t.Errorf("exit after SIGINT: %v", err)
	}
	if watchdogs != 0 {
		t.Errorf("%d watchdog keep-alives without WATCHDOG_USEC", watchdogs)
	}
}

func TestSIGHUPAddsListenerKeepsSession(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	seedStore(t, env)
	p := startBridge(t, env)
	first := p.addrs()[0]
	old := dialLogin(t, first)

	rewriteConfig(t, env, "  - address: 127.0.0.1:0\n  - address: localhost:0\n", "")
	p.reload("configuration reloaded")
	addrs := p.addrs()
	if len(addrs) != 2 {
		t.Fatalf("listeners after SIGHUP = %v, want 2", addrs)
	}
	if addrs[0] != first {
		t.Errorf("first listener moved from %s to %s", first, addrs[0])
	}

	if _, err := relay(dialLogin(t, addrs[1]), "a@example.org"); err != nil {
		t.Fatalf("send through the new listener: %v", err)
	}
	reply, err := relay(old, "b@example.org")
	if err != nil {
		t.Fatalf("send on the session opened before SIGHUP: %v", err)
	}
	if !strings.Contains(reply, "gsmtp") {
		t.Errorf("reply %q is not the upstream's", reply)
	}
	env.Gmail.WaitMessages(t, 2, 10*time.Second)
}

func TestSIGHUPBrokenConfigKeepsOld(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	seedStore(t, env)
	p := startBridge(t, env)
	addr := p.addrs()[0]
	old := dialLogin(t, addr)

	rewriteConfig(t, env, "  - address: 127.0.0.1:0\n    tls: sometimes\n", "")
	p.reload("reload rejected")
	logs := p.logs.String()
	if !strings.Contains(logs, `config.yaml:3: listeners[0].tls: invalid mode \"sometimes\"`) {
		t.Errorf("log does not name the problem with file:line:\n%s", logs)
	}
	if got := p.addrs(); len(got) != 1 || got[0] != addr {
		t.Errorf("listeners after a rejected reload = %v, want [%s]", got, addr)
	}
	if _, err := relay(old, "a@example.org"); err != nil {
		t.Fatalf("send on the old session: %v", err)
	}
	if _, err := relay(dialLogin(t, addr), "b@example.org"); err != nil {
		t.Fatalf("send on a new session after the rejected reload: %v", err)
	}
	env.Gmail.WaitMessages(t, 2, 10*time.Second)
}

func TestSIGTERMDuringSlowData(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{ExtraYAML: "limits:\n  shutdown_grace: 30s\n"})
	seedStore(t, env)
	p := startBridge(t, env)
	addr := p.addrs()[0]
	idle := dialLogin(t, addr)
	env.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Delay: time.Second})

	c := dialLogin(t, addr)
	if err := c.Mail(svcAccount, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(svcMessage)); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGTERM)
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatalf("reply to the end of data after SIGTERM: %v, want the upstream's 250", err)
	}
	if !strings.Contains(resp.StatusText, "gsmtp") {
		t.Errorf("reply %q is not the upstream's", resp.StatusText)
	}
	env.Gmail.WaitMessages(t, 1, 10*time.Second)

	if err := idle.Noop(); err == nil {
		t.Errorf("the idle session still works after SIGTERM")
	}
	if err := p.wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	logs := p.logs.String()
	if !strings.Contains(logs, "cause=\"terminated signal received\"") {
		t.Errorf("log does not name the signal:\n%s", logs)
	}
	if strings.Contains(logs, "grace period over") {
		t.Errorf("the transaction outlived the grace period")
	}
}

func TestSIGTERMGraceOverGives4xx(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{ExtraYAML: "limits:\n  shutdown_grace: 200ms\n"})
	seedStore(t, env)
	p := startBridge(t, env)
	env.Gmail.AddFault(fakegmail.Fault{Stage: fakegmail.StageDataEnd, Delay: 20 * time.Second})

	c := dialLogin(t, p.addrs()[0])
	if err := c.Mail(svcAccount, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(svcMessage)); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGTERM)
	_, err = w.CloseWithResponse()
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code/100 != 4 {
		t.Fatalf("reply to the end of data = %v, want a 4xx", err)
	}
	if err := p.wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if logs := p.logs.String(); !strings.Contains(logs, "grace period over") {
		t.Errorf("log does not say that the grace period ran out:\n%s", logs)
	}
}

func TestClientTLSListeners(t *testing.T) {
	certs := testcert.New(t)
	listeners := fmt.Sprintf("  - address: 127.0.0.1:0\n    tls: starttls\n    cert_file: %s\n    key_file: %s\n"+
		"  - address: localhost:0\n    tls: implicit\n    cert_file: %[1]s\n    key_file: %[2]s\n",
		certs.CertFile, certs.KeyFile)
	env := bridgetest.New(t, bridgetest.Options{Listeners: listeners})
	seedStore(t, env)
	p := startBridge(t, env)
	st := p.status()
	if len(st.Listeners) != 2 || st.Listeners[0].TLS != "starttls" || st.Listeners[1].TLS != "implicit" {
		t.Fatalf("listeners = %+v", st.Listeners)
	}
	startTLSAddr, implicitAddr := st.Listeners[0].Address, st.Listeners[1].Address

	plain, err := smtp.Dial(startTLSAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.Auth(sasl.NewPlainClient("", svcUser, svcPassword)); err == nil {
		t.Errorf("AUTH before STARTTLS succeeded")
	}

	for _, tc := range []struct {
		name string
		dial func() (*smtp.Client, error)
	}{
		{"starttls", func() (*smtp.Client, error) { return smtp.DialStartTLS(startTLSAddr, certs.ClientTLS("localhost")) }},
		{"implicit", func() (*smtp.Client, error) { return smtp.DialTLS(implicitAddr, certs.ClientTLS("localhost")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Auth(sasl.NewPlainClient("", svcUser, svcPassword)); err != nil {
				t.Fatalf("AUTH: %v", err)
			}
			if _, err := relay(c, "a@example.org"); err != nil {
				t.Fatalf("send: %v", err)
			}
		})
	}
	env.Gmail.WaitMessages(t, 2, 10*time.Second)

	old := certs.ClientTLS("localhost")
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if conn, err := tls.Dial("tcp", implicitAddr, old); err == nil {
		conn.Close()
		t.Errorf("a TLS 1.1 client was accepted below min_tls_version 1.2")
	}
}

func TestJSONLogRelayLine(t *testing.T) {
	env := bridgetest.New(t, bridgetest.Options{})
	refresh := seedStore(t, env)
	editConfig(t, env, "log:\n  level: debug\n", "log:\n  level: debug\n  format: json\n")
	p := startBridge(t, env)
	if _, err := relay(dialLogin(t, p.addrs()[0]), "a@example.org"); err != nil {
		t.Fatal(err)
	}
	i := p.logs.waitFor(t, 0, `"msg":"message relayed"`)
	line := strings.Split(p.logs.String(), "\n")[i]

	var entry map[string]any
	if err := json.Unmarshal([]byte(line), &entry); err != nil {
		t.Fatalf("relay line is not JSON: %v\n%s", err, line)
	}
	for _, key := range []string{"session", "user", "account", "message_id", "size", "recipients", "reply", "duration"} {
		if _, ok := entry[key]; !ok {
			t.Errorf("relay line lacks %q: %s", key, line)
		}
	}
	if entry["message_id"] != "<scan-0042@printer.example>" {
		t.Errorf("message_id = %v", entry["message_id"])
	}
	if entry["recipients"] != float64(1) {
		t.Errorf("recipients = %v, want 1", entry["recipients"])
	}
	for i, l := range strings.Split(p.logs.String(), "\n") {
		if err := json.Unmarshal([]byte(l), new(map[string]any)); err != nil {
			t.Errorf("log line %d is not JSON: %s", i, l)
		}
	}
	logs := p.logs.String()
	for _, secret := range []string{svcPassword, refresh, "Page one."} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q", secret)
		}
	}
}
