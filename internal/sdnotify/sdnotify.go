// Package sdnotify reports a service's state to systemd through the
// datagram socket named in $NOTIFY_SOCKET, as sd_notify(3) describes:
// READY=1, RELOADING=1, STOPPING=1, STATUS= and the WATCHDOG=1 keep-alive.
//
// It speaks the protocol itself, a few lines of code, so the bridge needs
// no libsystemd and no dependency for it.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notifier sends state changes to the service manager. A nil Notifier
// sends nothing, so a process that systemd did not start can use one
// unconditionally. Its methods are safe for concurrent use.
type Notifier struct {
	addr *net.UnixAddr
}

// FromEnv returns a Notifier for the socket in $NOTIFY_SOCKET, or nil
// when the variable is unset. The socket is a path, or an abstract socket
// name that starts with '@'. Other forms, such as systemd's vsock
// addresses, are an error.
func FromEnv() (*Notifier, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil, nil
	}
	if !strings.HasPrefix(name, "/") && !strings.HasPrefix(name, "@") {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: only a path or an abstract socket (@name) is supported", name)
	}
	// Go maps a leading '@' of a unix socket name to the NUL byte of
	// Linux's abstract namespace.
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}, nil
}

// Send sends the assignments, such as "READY=1", as one datagram.
func (n *Notifier) Send(assignments ...string) error {
	if n == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("notifying systemd: %w", err)
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte(strings.Join(assignments, "\n") + "\n")); err != nil {
		return fmt.Errorf("notifying systemd: %w", err)
	}
	return nil
}

// Ready reports that start-up or a reload finished, with a status line.
func (n *Notifier) Ready(status string) error {
	return n.Send("READY=1", statusLine(status))
}

// Reloading reports that a reload began. It sends the time of the
// monotonic clock with it, which Type=notify-reload services must.
func (n *Notifier) Reloading() error {
	usec, err := monotonicMicroseconds()
	if err != nil {
		return fmt.Errorf("notifying systemd: %w", err)
	}
	return n.Send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatInt(usec, 10))
}

// Stopping reports that the service began to shut down.
func (n *Notifier) Stopping(status string) error {
	return n.Send("STOPPING=1", statusLine(status))
}

// Status sends a free-form status line, which systemctl status shows.
func (n *Notifier) Status(status string) error {
	return n.Send(statusLine(status))
}

// Watchdog sends the keep-alive that WatchdogSec= expects.
func (n *Notifier) Watchdog() error {
	return n.Send("WATCHDOG=1")
}

func statusLine(s string) string {
	return "STATUS=" + strings.Join(strings.Fields(s), " ")
}

// WatchdogInterval returns how often to send WATCHDOG=1: half of
// $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises. It returns 0 when
// the watchdog is off, or when $WATCHDOG_PID names another process.
func WatchdogInterval() (time.Duration, error) {
	value := os.Getenv("WATCHDOG_USEC")
	if value == "" {
		return 0, nil
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, nil
	}
	usec, err := strconv.ParseInt(value, 10, 64)
	if err != nil || usec <= 0 {
		return 0, errors.New("WATCHDOG_USEC " + strconv.Quote(value) + " is not a positive number of microseconds")
	}
	return time.Duration(usec) * time.Microsecond / 2, nil
}
