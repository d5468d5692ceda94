//go:build race

package main

// A test binary built with -race builds the bridge binary with -race too.
const raceEnabled = true
