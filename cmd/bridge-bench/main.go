// Command bridge-bench measures the bridge against direct submission, in
// one run on loopback, against a fake Gmail that requires STARTTLS and
// XOAUTH2:
//
//   - direct: N clients each send M messages straight to the fake, one
//     connection per message (connect, STARTTLS, AUTH XOAUTH2, MAIL,
//     RCPT, DATA, QUIT), as a program without the bridge must;
//   - bridge: the same clients and messages through the bridge, with AUTH
//     PLAIN over plaintext loopback.
//
// For each it reports messages per second, p50 and p99 latency, CPU time
// and peak RSS of every process, and the ratio bridge/direct. It then
// measures the latency that the bridge adds with a warm pool, the peak
// RSS that relaying a 30 MiB message adds, and the RSS of 1,000 idle
// client sessions.
//
// The bridge runs as its own process, the binary of cmd/bridge, and the
// fakes in another, so that /proc shows each one's CPU time and memory.
// It needs Linux and, unless -bridge names a binary, the go command:
//
//	go run ./cmd/bridge-bench
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// The account, user and password that every run uses.
const (
	benchAccount  = "bench@example.com"
	benchUser     = "bench"
	benchPassword = "loopback bench password"
)

// options are the command-line flags.
type options struct {
	// rounds is the number of direct and bridge runs, which alternate.
	rounds                  int
	clients, messages, size int
	// warm is the number of transactions of the warm-pool latency run.
	warm int
	// big is the size of the large message, and idle the number of idle
	// sessions.
	big, idle int
	// bridgeBin is a prebuilt bridge binary; empty builds one.
	bridgeBin string
	keep      bool
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bridge-bench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	// The benchmark starts itself again for the fake servers and for
	// each load run, with one of these hidden first arguments.
	if len(args) > 0 {
		switch args[0] {
		case roleFake:
			if len(args) != 2 {
				return fmt.Errorf("%s needs a directory", roleFake)
			}
			return runFake(args[1])
		case roleLoad:
			return runLoad()
		}
	}

	fs := flag.NewFlagSet("bridge-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.rounds, "rounds", 3, "alternating direct and bridge `runs` of each")
	fs.IntVar(&o.clients, "clients", 16, "concurrent `clients`")
	fs.IntVar(&o.messages, "messages", 50, "messages per client")
	fs.IntVar(&o.size, "size", 20*1024, "message size in `bytes`")
	fs.IntVar(&o.warm, "warm", 500, "transactions of the warm-pool latency run")
	fs.IntVar(&o.big, "big", 30<<20, "size of the large message in `bytes`")
	fs.IntVar(&o.idle, "idle", 1000, "idle client sessions")
	fs.StringVar(&o.bridgeBin, "bridge", "", "bridge `binary` to measure; empty builds ./cmd/bridge")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory with configs and logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.rounds < 1 || o.clients < 1 || o.messages < 1 || o.size < 1 || o.warm < 1 || o.big < 1 || o.idle < 0 {
		return errors.New("-rounds, -clients, -messages, -size, -warm and -big must be positive, and -idle must not be negative")
	}
	return benchmark(o, stdout, stderr)
}

// Hidden first arguments of the benchmark's own child processes.
const (
	roleFake = "_fake"
	roleLoad = "_load"
)
