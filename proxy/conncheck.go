//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package proxy

import (
	"errors"
	"net"
	"syscall"
)

// connAlive reports whether the server has neither closed the idle TCP
// connection c nor sent anything on it, such as a 421 before closing. It
// peeks at the socket without blocking and without taking any bytes, so
// it costs one system call.
func connAlive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN means nothing to read: the connection is quiet. Zero
		// bytes without an error is the server's FIN, and any data is
		// unsolicited.
		alive = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
		// true ends Read at once instead of waiting for data.
		return true
	})
	return err == nil && alive
}
