package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the benchmark's own child
// processes, which it starts as itself with a hidden first argument.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == roleFake || os.Args[1] == roleLoad) {
		if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestMessageHasRequestedSize(t *testing.T) {
	for _, size := range []int{500, 20 * 1024, 20*1024 + 1, 20*1024 + 2, 1 << 20} {
		msg := message(3, 7, size)
		if len(msg) != size {
			t.Errorf("message of %d bytes has %d", size, len(msg))
		}
		if !bytes.HasSuffix(msg, []byte("\r\n")) {
			t.Errorf("message of %d bytes does not end with CRLF", size)
		}
		if !bytes.Contains(msg, []byte("Message-ID: <bench-3-7@")) {
			t.Errorf("message of %d bytes lacks its Message-ID", size)
		}
	}
}

func TestPercentileNearestRank(t *testing.T) {
	var sorted []time.Duration
	for i := 1; i <= 100; i++ {
		sorted = append(sorted, time.Duration(i))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}} {
		if got := percentile(sorted, tc.q); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("p99 of one value = %v, want 7", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v, want 0", got)
	}
}

func TestMedianOfRounds(t *testing.T) {
	r := &results{rounds: make([]round, 4)}
	values := []float64{4, 1, 3, 2}
	i := 0
	got := r.median(func(round) float64 {
		v := values[i]
		i++
		return v
	})
	if got != 2.5 {
		t.Errorf("median = %v, want 2.5", got)
	}
}

func TestReadUsageOfSelf(t *testing.T) {
	u, err := readUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS <= 0 || u.PeakRSS < u.RSS {
		t.Errorf("RSS %d, peak %d", u.RSS, u.PeakRSS)
	}
	if err := resetPeakRSS(os.Getpid()); err != nil {
		t.Logf("resetting VmHWM: %v", err)
	}
}

func TestScanListeningFindsAddress(t *testing.T) {
	log := "time=x level=INFO msg=\"bridge starting\"\n" +
		"time=x level=INFO msg=listening address=127.0.0.1:40123 tls=none\n" +
		"time=x level=INFO msg=listening address=127.0.0.1:40124 tls=none\n"
	addr := make(chan string, 2)
	scanListening(strings.NewReader(log), addr)
	if got := <-addr; got != "127.0.0.1:40123" {
		t.Errorf("address = %q", got)
	}
	if len(addr) != 0 {
		t.Error("a second listening line was reported")
	}
}

func TestFlagsRejected(t *testing.T) {
	for _, args := range [][]string{{"-clients", "0"}, {"-rounds", "0"}, {"-idle", "-1"}, {"extra"}} {
		var out, errOut bytes.Buffer
		if err := run(args, &out, &errOut); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

// TestBenchmarkRuns runs the whole benchmark at a tiny size against the
// built bridge, so the tool keeps working. It checks the report, not the
// numbers.
func TestBenchmarkRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the bridge and starts several processes")
	}
	bin := filepath.Join(t.TempDir(), "bridge")
	build := exec.Command("go", "build", "-o", bin, "github.com/bridgemail/bridge/cmd/bridge")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the bridge: %v\n%s", err, out)
	}

	var out, errOut bytes.Buffer
	args := []string{"-bridge", bin, "-rounds", "1", "-clients", "2", "-messages", "3",
		"-warm", "5", "-big", "200000", "-idle", "5"}
	if err := run(args, &out, &errOut); err != nil {
		t.Fatalf("benchmark: %v\n%s", err, errOut.String())
	}
	report := out.String()
	for _, want := range []string{"| messages/s |", "| added by the bridge |", "idle sessions after EHLO and AUTH",
		"throughput bridge/direct", "Machine: "} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
}
