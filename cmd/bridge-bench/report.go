package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// results are the numbers of one run.
type results struct {
	opts    options
	machine machine

	rounds []round
	big    bigResult
	idle   idleResult
}

// round is one direct run, one bridge run under the same load, and the
// warm-pool latency runs after it.
type round struct {
	direct, viaBridge      phase
	warmDirect, warmBridge phase
}

// ratio returns the throughput of the bridge over that of direct
// submission.
func (rd round) ratio() float64 { return rate(rd.viaBridge.load) / rate(rd.direct.load) }

// addedP50 returns the p50 latency that the bridge adds with a warm pool.
func (rd round) addedP50() time.Duration {
	return percentile(rd.warmBridge.load.Latencies, 50) - percentile(rd.warmDirect.load.Latencies, 50)
}

// Targets the bridge is measured against.
const (
	targetRatio       = 1.0
	targetAddedP50    = time.Millisecond
	targetBigMessage  = 8e6   // bytes of peak RSS added by the large message
	targetIdleRSS     = 100e6 // bytes of RSS with the idle sessions open
	targetIdleSession = 1000
)

// machine describes where the benchmark ran.
type machine struct {
	cpus                     int
	model, kernel, goVersion string
	memory                   int64
	date                     time.Time
	// loadStart and loadEnd are the one-minute load averages when the
	// benchmark started and ended, which show how busy the machine was.
	loadStart, loadEnd string
}

// loadAverage returns the one-minute load average, or "unknown".
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

func describeMachine() machine {
	m := machine{
		cpus:      runtime.NumCPU(),
		goVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		date:      time.Now().UTC(),
		model:     "unknown CPU",
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if key, value, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(key) == "model name" {
				m.model = strings.TrimSpace(value)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kib int64
		if _, err := fmt.Sscanf(string(data), "MemTotal: %d kB", &kib); err == nil {
			m.memory = kib * 1024
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = "Linux " + strings.TrimSpace(string(data))
	}
	return m
}

// write prints the results as Markdown.
func (r *results) write(w io.Writer) {
	o := r.opts
	fmt.Fprintf(w, "Command: `go run ./cmd/bridge-bench -rounds %d -clients %d -messages %d -size %d -warm %d -big %d -idle %d`\n\n",
		o.rounds, o.clients, o.messages, o.size, o.warm, o.big, o.idle)
	m := r.machine
	fmt.Fprintf(w, "Machine: %d CPUs (%s), %.1f GiB RAM, %s, %s; %s; one-minute load average %s at the start, %s at the end\n\n",
		m.cpus, m.model, float64(m.memory)/(1<<30), m.kernel, m.goVersion, m.date.Format("2006-01-02 15:04 MST"),
		m.loadStart, m.loadEnd)

	r.writeThroughput(w)
	r.writeWarm(w)
	r.writeMemory(w)
	r.writeTargets(w)
}

// median returns the median of f over the rounds.
func (r *results) median(f func(round) float64) float64 {
	values := make([]float64, len(r.rounds))
	for i, rd := range r.rounds {
		values[i] = f(rd)
	}
	slices.Sort(values)
	n := len(values)
	if n%2 == 1 {
		return values[n/2]
	}
	return (values[n/2-1] + values[n/2]) / 2
}

// maxOf returns the largest value of f over the rounds.
func (r *results) maxOf(f func(round) int64) int64 {
	var m int64
	for _, rd := range r.rounds {
		m = max(m, f(rd))
	}
	return m
}

// perRound lists f of each round.
func (r *results) perRound(f func(round) string) string {
	parts := make([]string, len(r.rounds))
	for i, rd := range r.rounds {
		parts[i] = f(rd)
	}
	return strings.Join(parts, ", ")
}

func (r *results) writeThroughput(w io.Writer) {
	fmt.Fprintf(w, "### %d clients, %d messages each of %d bytes, one connection per message\n\n",
		r.opts.clients, r.opts.messages, r.opts.size)
	fmt.Fprintf(w, "Medians of %d rounds, and the highest peak RSS of any round. The ratio is the median of "+
		"the rounds' ratios, so it need not equal the ratio of the two medians.\n\n", len(r.rounds))
	fmt.Fprintln(w, "| | direct | bridge | bridge/direct |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	// row prints the medians of a metric for direct and bridge, and the
	// median of its per-round ratio.
	row := func(name string, metric func(phase) float64, format func(float64) string) {
		d := r.median(func(rd round) float64 { return metric(rd.direct) })
		b := r.median(func(rd round) float64 { return metric(rd.viaBridge) })
		ratio := r.median(func(rd round) float64 { return metric(rd.viaBridge) / metric(rd.direct) })
		fmt.Fprintf(w, "| %s | %s | %s | %.2f |\n", name, format(d), format(b), ratio)
	}
	asRate := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	asMS := func(v float64) string { return ms(time.Duration(v)) }
	asS := func(v float64) string { return seconds(time.Duration(v)) }
	row("messages/s", func(p phase) float64 { return rate(p.load) }, asRate)
	row("p50 latency", func(p phase) float64 { return float64(percentile(p.load.Latencies, 50)) }, asMS)
	row("p99 latency", func(p phase) float64 { return float64(percentile(p.load.Latencies, 99)) }, asMS)
	row("CPU per message, all processes", func(p phase) float64 { return float64(cpuPerMessage(p)) }, asMS)
	asCount := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	row("logins at the fake Gmail", func(p phase) float64 { return float64(p.logins) }, asCount)
	row("TLS connections to the fake Gmail", func(p phase) float64 { return float64(p.conns) }, asCount)

	plain := func(name string, direct, bridge string) {
		fmt.Fprintf(w, "| %s | %s | %s | |\n", name, direct, bridge)
	}
	median := func(f func(round) time.Duration) string {
		return asS(r.median(func(rd round) float64 { return float64(f(rd)) }))
	}
	plain("CPU, sender", median(func(rd round) time.Duration { return rd.direct.load.CPU }),
		median(func(rd round) time.Duration { return rd.viaBridge.load.CPU }))
	plain("CPU, bridge", "–", median(func(rd round) time.Duration { return rd.viaBridge.bridge.CPU }))
	plain("CPU, fake Gmail", median(func(rd round) time.Duration { return rd.direct.fake.CPU }),
		median(func(rd round) time.Duration { return rd.viaBridge.fake.CPU }))
	plain("peak RSS, sender", mb(r.maxOf(func(rd round) int64 { return rd.direct.load.PeakRSS })),
		mb(r.maxOf(func(rd round) int64 { return rd.viaBridge.load.PeakRSS })))
	plain("peak RSS, bridge", "–", mb(r.maxOf(func(rd round) int64 { return rd.viaBridge.bridge.PeakRSS })))
	plain("peak RSS, fake Gmail", mb(r.maxOf(func(rd round) int64 { return rd.direct.fake.PeakRSS })),
		mb(r.maxOf(func(rd round) int64 { return rd.viaBridge.fake.PeakRSS })))
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Throughput bridge/direct in each round: %s.\n\n",
		r.perRound(func(rd round) string { return fmt.Sprintf("%.2f", rd.ratio()) }))
}

func (r *results) writeWarm(w io.Writer) {
	fmt.Fprintf(w, "### Latency with a warm pool: 1 client, %d transactions on one session\n\n", r.opts.warm)
	fmt.Fprintln(w, "Each is the time from MAIL to the reply to the end of data, the median of the rounds. "+
		"The added latency is the median of each round's difference.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| | p50 | p99 |")
	fmt.Fprintln(w, "|---|---:|---:|")
	quantile := func(pick func(round) phase, q float64) time.Duration {
		return time.Duration(r.median(func(rd round) float64 { return float64(percentile(pick(rd).load.Latencies, q)) }))
	}
	direct := func(rd round) phase { return rd.warmDirect }
	bridge := func(rd round) phase { return rd.warmBridge }
	fmt.Fprintf(w, "| fake Gmail alone, on an authenticated connection | %s | %s |\n",
		ms(quantile(direct, 50)), ms(quantile(direct, 99)))
	fmt.Fprintf(w, "| through the bridge | %s | %s |\n", ms(quantile(bridge, 50)), ms(quantile(bridge, 99)))
	added := time.Duration(r.median(func(rd round) float64 { return float64(rd.addedP50()) }))
	fmt.Fprintf(w, "| added by the bridge | %s | |\n\n", ms(added))
	fmt.Fprintf(w, "p50 added in each round: %s. CPU of the bridge per transaction: %s.\n\n",
		r.perRound(func(rd round) string { return ms(rd.addedP50()) }),
		ms(time.Duration(r.median(func(rd round) float64 {
			return float64(rd.warmBridge.bridge.CPU) / float64(max(rd.warmBridge.load.Messages, 1))
		}))))
}

func (r *results) writeMemory(w io.Writer) {
	fmt.Fprintln(w, "### Memory of the bridge")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| | before | after | added |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	big := r.big
	fmt.Fprintf(w, "| peak RSS, relaying one message of %d bytes (%s) | %s | %s | %s |\n",
		big.size, seconds(big.latency), mb(big.before.PeakRSS), mb(big.after.PeakRSS),
		mb(big.after.PeakRSS-big.before.PeakRSS))
	if r.idle.sessions > 0 {
		idle := r.idle
		fmt.Fprintf(w, "| RSS, %d idle sessions after EHLO and AUTH | %s | %s | %s |\n",
			idle.sessions, mb(idle.before.RSS), mb(idle.after.RSS), mb(idle.after.RSS-idle.before.RSS))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "MB is 10^6 bytes. RSS and peak RSS are VmRSS and VmHWM from /proc/PID/status.")
	fmt.Fprintln(w)
}

func (r *results) writeTargets(w io.Writer) {
	fmt.Fprintln(w, "### Targets")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | met |")
	fmt.Fprintln(w, "|---|---:|---|")
	row := func(target, measured string, met bool) {
		verdict := "yes"
		if !met {
			verdict = "**no**"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", target, measured, verdict)
	}
	ratio := r.median(round.ratio)
	row(fmt.Sprintf("throughput bridge/direct ≥ %.1f (median)", targetRatio), fmt.Sprintf("%.2f", ratio), ratio >= targetRatio)
	added := time.Duration(r.median(func(rd round) float64 { return float64(rd.addedP50()) }))
	row("p50 latency added with a warm pool ≤ 1 ms (median)", ms(added), added <= targetAddedP50)
	bigAdded := r.big.after.PeakRSS - r.big.before.PeakRSS
	row(fmt.Sprintf("peak RSS added by a %d-byte message < 8 MB", r.big.size), mb(bigAdded), bigAdded < targetBigMessage)
	if r.idle.sessions >= targetIdleSession {
		row(fmt.Sprintf("RSS with %d idle sessions < 100 MB", r.idle.sessions), mb(r.idle.after.RSS),
			r.idle.after.RSS < targetIdleRSS)
	} else {
		fmt.Fprintf(w, "| RSS with %d idle sessions < 100 MB | not run: -idle is %d | |\n", targetIdleSession, r.idle.sessions)
	}
	fmt.Fprintln(w)
}

func rate(l loadResult) float64 { return float64(l.Messages) / l.Wall.Seconds() }

func cpuPerMessage(p phase) time.Duration {
	total := p.load.CPU + p.bridge.CPU + p.fake.CPU
	return total / time.Duration(max(p.load.Messages, 1))
}

// percentile returns the q-th percentile of sorted, by the nearest-rank
// method.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q/100*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

func ms(d time.Duration) string      { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
func seconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
func mb(n int64) string              { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
