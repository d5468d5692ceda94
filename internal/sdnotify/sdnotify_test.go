package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen opens a datagram socket at name and returns a function that
// reads one message from it.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("reading notification: %v", err)
		}
		return string(buf[:n])
	}
}

func notifier(t *testing.T) *Notifier {
	t.Helper()
	n, err := FromEnv()
	if err != nil || n == nil {
		t.Fatalf("FromEnv = %v, %v", n, err)
	}
	return n
}

func TestNotifyPathSocket(t *testing.T) {
	read := listen(t, filepath.Join(t.TempDir(), "notify"))
	n := notifier(t)

	if err := n.Ready("serving on\n127.0.0.1:2525"); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "READY=1\nSTATUS=serving on 127.0.0.1:2525\n"; got != want {
		t.Errorf("ready message = %q, want %q", got, want)
	}
	if err := n.Stopping("stopping"); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "STOPPING=1\nSTATUS=stopping\n" {
		t.Errorf("stopping message = %q", got)
	}
	if err := n.Watchdog(); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "WATCHDOG=1\n" {
		t.Errorf("watchdog message = %q", got)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	read := listen(t, "@bridge-sdnotify-test-"+strconv.Itoa(os.Getpid()))
	if err := notifier(t).Send("READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "READY=1\n" {
		t.Errorf("message = %q", got)
	}
}

func TestReloadingSendsMonotonicTime(t *testing.T) {
	read := listen(t, filepath.Join(t.TempDir(), "notify"))
	if err := notifier(t).Reloading(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(read(), "\n"), "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" {
		t.Fatalf("message lines = %q", lines)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") || err != nil || usec <= 0 {
		t.Errorf("second line = %q, want MONOTONIC_USEC=<positive>", lines[1])
	}
}

func TestFromEnvUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := FromEnv()
	if n != nil || err != nil {
		t.Fatalf("FromEnv = %v, %v, want nil, nil", n, err)
	}
	if err := n.Ready("ignored"); err != nil {
		t.Errorf("nil Notifier: %v", err)
	}
}

func TestFromEnvRejectsOtherForms(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if _, err := FromEnv(); err == nil {
		t.Error("FromEnv accepted a vsock address")
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		name, usec, pid string
		want            time.Duration
		wantErr         bool
	}{
		{"unset", "", "", 0, false},
		{"half of the timeout", "30000000", "", 15 * time.Second, false},
		{"this process", "2000000", strconv.Itoa(os.Getpid()), time.Second, false},
		{"another process", "2000000", "1", 0, false},
		{"not a number", "soon", "", 0, true},
		{"zero", "0", "", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tc.usec)
			t.Setenv("WATCHDOG_PID", tc.pid)
			got, err := WatchdogInterval()
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("interval = %v, want %v", got, tc.want)
			}
		})
	}
}
