package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 on every architecture it exports to user
// space.
const clockTick = 10 * time.Millisecond

// procUsage is the CPU time and memory of one process, from /proc.
type procUsage struct {
	// CPU is user plus system time, to the 10 ms of a clock tick.
	CPU time.Duration
	// RSS is the resident set now, and PeakRSS the highest it has been
	// (VmHWM), in bytes.
	RSS, PeakRSS int64
}

// readUsage reads the CPU time and resident set of process pid.
func readUsage(pid int) (procUsage, error) {
	var u procUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name in parentheses may hold spaces; the fields after
	// it are fixed. utime and stime are fields 14 and 15 of the line,
	// the 12th and 13th after the name.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return u, fmt.Errorf("/proc/%d/stat: invalid utime or stime", pid)
	}
	u.CPU = time.Duration(utime+stime) * clockTick

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			u.RSS = kib * 1024
		case "VmHWM":
			u.PeakRSS = kib * 1024
		}
	}
	return u, nil
}

// resetPeakRSS sets the process's VmHWM back to its current RSS, so a
// later reading shows the peak of what happens in between. Linux allows
// it since 4.0 for processes of the same user.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// child is a process the benchmark started. The fake process ends when
// its standard input closes, and every child gets SIGTERM if the
// benchmark dies first.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// stderr keeps the child's log for errors.
	stderr *bytes.Buffer
	// out decodes what the fake process writes.
	out *json.Decoder
}

// startChild starts a process with a pipe on its standard input. Unless
// cmd.Stdout is set, it returns a pipe from the standard output.
func startChild(name string, cmd *exec.Cmd) (*child, io.Reader, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	var stdout io.Reader
	if cmd.Stdout == nil {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, nil, err
		}
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, stderr: &bytes.Buffer{}}
	if cmd.Stderr == nil {
		cmd.Stderr = c.stderr
	}
	// Pdeathsig ends a child whose parent dies without closing stdin.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return c, stdout, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop ends the child: SIGTERM, which bridge serve handles with a
// graceful shutdown, and SIGKILL if it has not exited after 10 seconds.
func (c *child) stop() {
	c.stdin.Close()
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		c.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}
