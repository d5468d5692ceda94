//go:build !linux

package sdnotify

import "errors"

// monotonicMicroseconds fails outside Linux, where no systemd runs.
func monotonicMicroseconds() (int64, error) {
	return 0, errors.New("CLOCK_MONOTONIC is read on Linux only")
}
