package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"strings"
)

// usageError is a command line that cannot run; main exits 2 for it.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// env is what every command gets besides its arguments.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run the SMTP server", runServe},
		{"authorize", "give consent for an account and set up a local user", runAuthorize},
		{"users", "list, remove or change the password of users", runUsers},
		{"check", "validate the configuration and the store, and with --online the accounts", runCheck},
		{"status", "show the state of the running server", runStatus},
		{"version", "print the version", runVersion},
	}
}

// run executes the command line args.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := env{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout)
		if len(args) == 0 {
			return usageError{"missing command"}
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	return usageError{fmt.Sprintf("unknown command %q; run bridge help", args[0])}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: bridge COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	cs := commands()
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run bridge COMMAND -h for the flags of a command.")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(e env, name, args string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: bridge %s %s\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, with flags before, between or after the
// positional arguments, and rejects any count of those other than want.
// Everything after "--" is positional.
func parseFlags(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		left := fs.Args()
		parsed := args[:len(args)-len(left)]
		if len(parsed) > 0 && parsed[len(parsed)-1] == "--" {
			rest = append(rest, left...)
			break
		}
		if len(left) == 0 {
			break
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
	if len(rest) != want {
		fs.Usage()
		if len(rest) > want {
			return nil, usageError{"unexpected arguments: " + strings.Join(rest[want:], " ")}
		}
		return nil, usageError{"missing arguments"}
	}
	return rest, nil
}

// version is set with -ldflags "-X main.version=v1.2.3"; otherwise it
// comes from the module's build information.
var version = ""

func runVersion(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "version", "")
	if _, err := parseFlags(fs, args, 0); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	fmt.Fprintln(e.stdout, "bridge", versionString())
	return nil
}

func versionString() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v += " (" + rev + modified + ")"
	}
	return v + " " + info.GoVersion
}
