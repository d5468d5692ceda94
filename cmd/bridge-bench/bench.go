package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/store"
)

// bench is one run of the benchmark.
type bench struct {
	opts   options
	dir    string
	self   string
	bridge string
	log    io.Writer
	// runs counts the bridges started, to give each a directory.
	runs int
}

func benchmark(o options, stdout, stderr io.Writer) error {
	b := &bench{opts: o, log: stderr}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.dir, err = os.MkdirTemp("", "bridge-bench-"); err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(stderr, "working directory:", b.dir)
	} else {
		defer os.RemoveAll(b.dir)
	}
	if b.bridge, err = b.buildBridge(); err != nil {
		return err
	}

	loadStart := loadAverage()
	r, err := b.measure()
	if err != nil {
		return err
	}
	r.machine = describeMachine()
	r.machine.loadStart, r.machine.loadEnd = loadStart, loadAverage()
	r.opts = o
	r.write(stdout)
	return nil
}

// buildBridge returns the bridge binary to measure, building it from this
// module unless -bridge named one.
func (b *bench) buildBridge() (string, error) {
	if b.opts.bridgeBin != "" {
		return filepath.Abs(b.opts.bridgeBin)
	}
	bin := filepath.Join(b.dir, "bridge")
	fmt.Fprintln(b.log, "building the bridge")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/bridgemail/bridge/cmd/bridge")
	cmd.Stdout, cmd.Stderr = b.log, b.log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the bridge (run from the repository, or pass -bridge): %w", err)
	}
	return bin, nil
}

// measure runs every phase and returns the numbers. The direct and the
// bridge runs alternate, so that a change in the machine's load during
// the benchmark hits both.
func (b *bench) measure() (*results, error) {
	r := &results{}
	var err error
	for i := range b.opts.rounds {
		var rd round
		fmt.Fprintf(b.log, "round %d: direct, %d clients x %d messages\n", i+1, b.opts.clients, b.opts.messages)
		if rd.direct, err = b.directPhase(); err != nil {
			return nil, err
		}
		fmt.Fprintf(b.log, "round %d: bridge, %d clients x %d messages, then %d warm transactions\n",
			i+1, b.opts.clients, b.opts.messages, b.opts.warm)
		if err := b.bridgePhase(&rd); err != nil {
			return nil, err
		}
		r.rounds = append(r.rounds, rd)
	}
	fmt.Fprintf(b.log, "large message: %d bytes\n", b.opts.big)
	if r.big, err = b.bigPhase(); err != nil {
		return nil, err
	}
	if b.opts.idle > 0 {
		fmt.Fprintf(b.log, "idle sessions: %d\n", b.opts.idle)
		if r.idle, err = b.idlePhase(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// phase is the outcome of one load run and the usage of each process
// during it.
type phase struct {
	load          loadResult
	fake, bridge  procUsage
	bridgeRunning bool
	// conns and logins count the connections and AUTH commands that the
	// fake Gmail got during the run.
	conns, logins int
}

func (b *bench) directPhase() (phase, error) {
	fake, info, err := b.startFake()
	if err != nil {
		return phase{}, err
	}
	defer fake.stop()
	return b.loadPhase(b.directSpec(modeDirect, info, b.opts.clients, b.opts.messages), fake, nil)
}

// bridgePhase measures the bridge under the same load, and then the
// latency of one client with a warm pool, against the fake's own.
func (b *bench) bridgePhase(r *round) error {
	fake, info, err := b.startFake()
	if err != nil {
		return err
	}
	defer fake.stop()
	br, addr, err := b.startBridge(info)
	if err != nil {
		return err
	}
	defer br.stop()

	spec := loadSpec{Mode: modeBridge, Addr: addr, Clients: b.opts.clients, Messages: b.opts.messages, Size: b.opts.size}
	if r.viaBridge, err = b.loadPhase(spec, fake, br); err != nil {
		return err
	}
	spec = loadSpec{Mode: modeBridgeWarm, Addr: addr, Clients: 1, Messages: b.opts.warm, Size: b.opts.size}
	if r.warmBridge, err = b.loadPhase(spec, fake, br); err != nil {
		return err
	}
	r.warmDirect, err = b.loadPhase(b.directSpec(modeDirectWarm, info, 1, b.opts.warm), fake, nil)
	return err
}

func (b *bench) directSpec(mode string, info fakeInfo, clients, messages int) loadSpec {
	return loadSpec{
		Mode: mode, Addr: info.SMTPAddr, Clients: clients, Messages: messages, Size: b.opts.size,
		CAFile: info.CAFile, TokenURL: info.TokenURL, ClientID: info.ClientID,
		ClientSecret: info.ClientSecret, RefreshToken: info.RefreshToken,
	}
}

// loadPhase runs a load process and reads the usage of the fake and of
// the bridge, if any, around it. The peak RSS of each is reset first, so
// it is the peak of this phase.
func (b *bench) loadPhase(spec loadSpec, fake, br *child) (phase, error) {
	var p phase
	resetPeakRSS(fake.pid())
	fakeBefore, err := readUsage(fake.pid())
	if err != nil {
		return p, err
	}
	countsBefore, err := fakeCounters(fake)
	if err != nil {
		return p, err
	}
	var bridgeBefore procUsage
	if br != nil {
		resetPeakRSS(br.pid())
		if bridgeBefore, err = readUsage(br.pid()); err != nil {
			return p, err
		}
	}

	if p.load, err = b.runLoadProcess(spec); err != nil {
		return p, err
	}

	if p.fake, err = usageSince(fake.pid(), fakeBefore); err != nil {
		return p, err
	}
	counts, err := fakeCounters(fake)
	if err != nil {
		return p, err
	}
	p.conns, p.logins = counts.Conns-countsBefore.Conns, counts.Logins-countsBefore.Logins
	if br != nil {
		p.bridgeRunning = true
		if p.bridge, err = usageSince(br.pid(), bridgeBefore); err != nil {
			return p, err
		}
	}
	return p, nil
}

// usageSince returns the CPU time of pid since before, and its RSS now.
func usageSince(pid int, before procUsage) (procUsage, error) {
	u, err := readUsage(pid)
	u.CPU -= before.CPU
	return u, err
}

// runLoadProcess runs one load process with spec and returns its result.
// A run in which any message failed is an error: its numbers would
// mislead.
func (b *bench) runLoadProcess(spec loadSpec) (loadResult, error) {
	var res loadResult
	c, stdout, err := startChild("load", exec.Command(b.self, roleLoad))
	if err != nil {
		return res, err
	}
	defer c.stop()
	if err := json.NewEncoder(c.stdin).Encode(spec); err != nil {
		return res, err
	}
	c.stdin.Close()
	if err := json.NewDecoder(stdout).Decode(&res); err != nil {
		return res, fmt.Errorf("load %s: reading the result: %w\n%s", spec.Mode, err, c.stderr)
	}
	if res.Failed > 0 {
		return res, fmt.Errorf("load %s: %d of %d messages failed, first: %s: %w",
			spec.Mode, res.Failed, res.Failed+res.Messages, res.FirstError, errLoadFailed)
	}
	return res, nil
}

// startFake starts the fake provider and Gmail in a process of their own.
func (b *bench) startFake() (*child, fakeInfo, error) {
	var info fakeInfo
	dir, err := os.MkdirTemp(b.dir, "fake-")
	if err != nil {
		return nil, info, err
	}
	c, stdout, err := startChild("fake", exec.Command(b.self, roleFake, dir))
	if err != nil {
		return nil, info, err
	}
	c.out = json.NewDecoder(stdout)
	if err := c.out.Decode(&info); err != nil {
		c.stop()
		return nil, info, fmt.Errorf("fake: reading its addresses: %w\n%s", err, c.stderr)
	}
	return c, info, nil
}

// fakeCounters returns the counters of a fake process.
func fakeCounters(fake *child) (fakeStats, error) {
	var st fakeStats
	if _, err := io.WriteString(fake.stdin, "stats\n"); err != nil {
		return st, err
	}
	if err := fake.out.Decode(&st); err != nil {
		return st, fmt.Errorf("fake: reading its counters: %w", err)
	}
	return st, nil
}

// startBridge writes a configuration and a store for the fake, starts
// bridge serve and returns its listening address.
func (b *bench) startBridge(info fakeInfo) (*child, string, error) {
	b.runs++
	dir := filepath.Join(b.dir, fmt.Sprintf("bridge-%d", b.runs))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, "", err
	}
	configPath, err := writeBridgeConfig(dir, info)
	if err != nil {
		return nil, "", err
	}
	logFile, err := os.Create(filepath.Join(dir, "bridge.log"))
	if err != nil {
		return nil, "", err
	}
	// The file stays open for the child's lifetime; the process exit
	// closes it.

	cmd := exec.Command(b.bridge, "serve", "--config", configPath)
	cmd.Stdout = logFile
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	c, _, err := startChild("bridge", cmd)
	if err != nil {
		return nil, "", err
	}
	addr := make(chan string, 1)
	go scanListening(io.TeeReader(stderr, logFile), addr)
	select {
	case a := <-addr:
		return c, a, nil
	case <-time.After(30 * time.Second):
		c.stop()
		return nil, "", fmt.Errorf("bridge did not start listening within 30s; see %s", logFile.Name())
	}
}

// scanListening reads the bridge's log, sends the address of its
// listening line, and keeps reading so the bridge never blocks on it.
func scanListening(r io.Reader, addr chan<- string) {
	sc := bufio.NewScanner(r)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		if sent || !strings.Contains(line, "msg=listening") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if a, ok := strings.CutPrefix(f, "address="); ok {
				addr <- a
				sent = true
			}
		}
	}
	io.Copy(io.Discard, r)
}

// writeBridgeConfig writes a configuration that points the bridge at the
// fakes and a store with the benchmark's user, and returns its path.
// Every key it leaves out has its default.
func writeBridgeConfig(dir string, info fakeInfo) (string, error) {
	yaml := fmt.Sprintf(`listeners:
  - address: 127.0.0.1:0
store:
  path: %s
providers:
  google:
    kind: google
    client_id: %q
    client_secret: %q
    auth_url: %s
    token_url: %s
    userinfo_url: %s
    upstream:
      address: %s
      tls: starttls
      server_name: localhost
      ca_file: %s
`, filepath.Join(dir, "bridge.db"), info.ClientID, info.ClientSecret, info.AuthURL, info.TokenURL,
		info.UserinfoURL, info.SMTPAddr, info.CAFile)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		return "", err
	}
	return path, seedStore(dir, info)
}

// seedStore stores the benchmark's user and the refresh token that the
// fake issued for its account.
func seedStore(dir string, info fakeInfo) error {
	key, err := store.LoadOrCreateKey(filepath.Join(dir, "bridge.key"))
	if err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(dir, "bridge.db"), key)
	if err != nil {
		return err
	}
	defer st.Close()
	hash, err := auth.HashPassword(benchPassword)
	if err != nil {
		return err
	}
	return st.Authorize(
		store.User{Name: benchUser, PasswordHash: hash, Account: benchAccount, Provider: "google"},
		store.Account{Address: benchAccount, Provider: "google", RefreshToken: info.RefreshToken, Scopes: info.Scopes},
	)
}
