// Command bench compares, on this machine and on loopback only, the same
// Caddy obtaining certificates with its own local CA (the `internal`
// issuer: no network, no API, so its time is certmagic's own work), with
// the sslci issuer from the SSLCI simulator, and with its ACME issuer from
// Pebble (Let's Encrypt's test server): time for N new names, the first
// on-demand handshake, API requests and TCP connections per certificate,
// the cost of a renewal and of a restart at scale, and Caddy's CPU and
// peak memory. It writes results.json, results.md and results.svg, and
// with -profile Caddy's CPU and allocation profiles.
//
//	cd bench && go run .
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) (err error) {
	here := sourceDir()
	fs, o := newFlags()
	if err := fs.Parse(args); err != nil {
		return err
	}
	sizes, err := parseSizes(o.sizes)
	if err != nil {
		return err
	}
	issuers, err := parseIssuers(o.issuers)
	if err != nil {
		return err
	}
	o.repeat = max(o.repeat, 1)
	largest := slices.Max(sizes)
	if o.restart < 0 {
		o.restart = 0
		for _, n := range sizes {
			if n <= 1000 {
				o.restart = max(o.restart, n)
			}
		}
	}
	// Caddy had 670 files open at most in a 1000-name run.
	raiseFileLimit(uint64(max(largest, o.restart)) + 4096)
	log.SetOutput(io.Discard) // Pebble's package-level log lines

	tmp, err := os.MkdirTemp("", "sslci-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep || (err != nil && !errors.Is(err, context.Canceled)) {
			fmt.Fprintln(os.Stderr, "logs and storage kept in", tmp)
			return
		}
		os.RemoveAll(tmp)
	}()

	fmt.Fprintln(os.Stderr, "building Caddy with the sslci issuer ...")
	bin := filepath.Join(tmp, "caddy")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./caddy")
	build.Dir, build.Stdout, build.Stderr = here, os.Stderr, os.Stderr
	if err = build.Run(); err != nil {
		return fmt.Errorf("building Caddy: %w", err)
	}
	res := newResults(bin)
	if o.pin {
		if err := pinned.set(runtime.NumCPU()); err != nil {
			return fmt.Errorf("-pin: %w", err)
		}
		res.Pinned = pinned.said()
	}
	fmt.Fprintf(os.Stderr, "%s, %d CPUs; Pebble %s\n", res.Caddy, res.CPUs, res.Pebble)

	for _, n := range sizes {
		// Each repeat runs every issuer once, so that the machine's other
		// work slows them alike.
		runs := o.repeat
		if n <= smallSize {
			runs = max(runs, o.repeatSmall)
		}
		for rep := range runs {
			for _, iss := range issuers {
				if iss == issuerACME && n > o.acmeMax {
					if rep == 0 {
						reason := fmt.Sprintf("not run (-acme-max %d): about %d s at Caddy's ACME rate limit of 10 orders per 10 s", o.acmeMax, n)
						fmt.Fprintf(os.Stderr, "%-8s %5d names: %s\n", iss, n, reason)
						res.Skipped = append(res.Skipped, skipped{Issuer: iss, Names: n, Reason: reason})
					}
					continue
				}
				r, err := issue(ctx, iss, bin, tmp, n, nil)
				if err != nil {
					return err
				}
				res.Issuance = append(res.Issuance, r)
			}
		}
	}
	if o.profileDir != "" {
		for _, iss := range issuers {
			if iss == issuerACME {
				continue
			}
			// The profile's length: the median run's and a margin.
			x, _ := res.find(iss, largest)
			prof := &profiler{dir: o.profileDir, seconds: int(math.Ceil(1.5*x.Seconds)) + 2}
			fmt.Fprintf(os.Stderr, "%-8s %5d names, profiled for %d s (not in the tables):\n", iss, largest, prof.seconds)
			if _, err := issue(ctx, iss, bin, tmp, largest, prof); err != nil {
				return err
			}
		}
	}
	res.LoadEnd = loadAverage()
	if o.restart == 0 {
		fmt.Fprintln(os.Stderr, "restart case skipped (-restart 0, or no size up to 1000: give -restart N)")
	} else {
		if res.Restart, err = restarts(ctx, issuers, bin, tmp, o.restart, o.repeat, o.restartSweep, o.profileDir); err != nil {
			return err
		}
	}
	for _, iss := range issuers {
		if o.onDemand > 0 {
			var r onDemand
			err = inWorld(iss, bin, tmp, func(w *world) (e error) { r, e = runOnDemand(ctx, w, o.onDemand); return })
			if err != nil {
				return fmt.Errorf("%s, on demand: %w", iss, err)
			}
			fmt.Fprintf(os.Stderr, "%-8s on demand: first handshake %.1f ms, next %.1f ms, %d API requests for %d names\n",
				iss, r.FirstMs, r.NextMs, r.API.Requests, r.Names)
			res.OnDemand = append(res.OnDemand, r)
		}
		var r renewal
		err = inWorld(iss, bin, tmp, func(w *world) (e error) { r, e = runRenewal(ctx, w); return })
		if err != nil {
			return fmt.Errorf("%s, renewal: %w", iss, err)
		}
		fmt.Fprintf(os.Stderr, "%-8s renewal: %.3f s, %d API requests, %d TCP connections\n",
			iss, r.Seconds, r.API.Requests, r.API.Conns)
		res.Renewal = append(res.Renewal, r)
	}
	if err = res.write(o.out); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", filepath.Join(o.out, "results.{json,md,svg}"))
	return nil
}

// options are the benchmark's flags, as newFlags defines them.
type options struct {
	sizes        string
	acmeMax      int
	onDemand     int
	restart      int
	restartSweep bool
	profileDir   string
	out          string
	issuers      string
	repeat       int
	repeatSmall  int
	pin          bool
	keep         bool
}

// newFlags defines the benchmark's flags: run parses its arguments with
// them, and readme_test.go the command lines the READMEs show.
func newFlags() (*flag.FlagSet, *options) {
	o := new(options)
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.sizes, "sizes", "1,10,50,100,1000", "how many new names Caddy obtains certificates for, one run each")
	fs.IntVar(&o.acmeMax, "acme-max", 100, "skip ACME runs above this many names (Caddy's ACME rate limit of 10 orders per 10s makes 1000 names take ~17 minutes)")
	fs.IntVar(&o.onDemand, "on-demand", 5, "new names handshaken one after another in the on-demand run (0 skips it)")
	fs.IntVar(&o.restart, "restart", -1, "names in the restart case, for the internal and sslci issuers (-1: the largest of -sizes up to 1000; 0 skips it)")
	fs.BoolVar(&o.restartSweep, "restart-sweep", false, "in the last restart, also count the sslci issuer's requests until its sweep, a minute after the start")
	fs.StringVar(&o.profileDir, "profile", "", "write Caddy's CPU and allocation profiles of one more run of the largest size, for the internal and sslci issuers, into this folder, and a CPU profile of one more restart of each (-restart)")
	fs.StringVar(&o.out, "out", filepath.Join(sourceDir(), "results"), "where to write results.json, results.md and results.svg")
	fs.StringVar(&o.issuers, "issuers", strings.Join(allIssuers, ","), "which issuers to run, alternated in each repeat")
	fs.IntVar(&o.repeat, "repeat", 3, "runs of each issuer and size; the tables show the median run")
	fs.IntVar(&o.repeatSmall, "repeat-small", 15, "runs of each issuer for sizes of 10 names or fewer, if more than -repeat: such a run is about one config load, which the machine's other work moves by as much as it costs")
	fs.BoolVar(&o.pin, "pin", false, "run Caddy on every CPU but the last, and the benchmark (the simulator, Pebble, the polling) on the last, so that the CA's work does not share Caddy's CPUs, as a real SSLCI's or Let's Encrypt's would not (Linux, 2 CPUs or more)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary folder (Caddy's and Pebble's logs, storage)")
	return fs, o
}

// smallSize is the most names -repeat-small applies to.
const smallSize = 10

// issue runs runIssuance for iss and n names in a fresh world, and prints
// its figures.
func issue(ctx context.Context, iss, bin, tmp string, n int, prof *profiler) (issuance, error) {
	var r issuance
	err := inWorld(iss, bin, tmp, func(w *world) (e error) { r, e = runIssuance(ctx, w, n, prof); return })
	if err != nil {
		return r, fmt.Errorf("%s, %d names: %w", iss, n, err)
	}
	fmt.Fprintf(os.Stderr, "%-8s %5d names: %8.3f s, %d API requests, %d TCP connections, Caddy %.2f s CPU, peak %d MiB, benchmark (CA) %.2f s CPU, %d errors logged\n",
		iss, n, r.Seconds, r.API.Requests, r.API.Conns, r.CPUSeconds, r.PeakKiB/1024, r.BenchCPUSeconds, r.Errors)
	return r, nil
}

// restarts runs the restart case for the internal and sslci issuers among
// issuers: each world's storage gets n certificates once, then each
// repeat restarts a Caddy on every world in turn.
// With profileDir, each issuer's world restarts once more, not in the
// tables, under a CPU profile of Caddy.
func restarts(ctx context.Context, issuers []string, bin, tmp string, n, repeat int, sweep bool, profileDir string) ([]restart, error) {
	var worlds []*world
	var leaves []map[string][]byte
	defer func() {
		for _, w := range worlds {
			w.close()
		}
	}()
	for _, iss := range issuers {
		if iss == issuerACME {
			continue
		}
		w, err := newWorld(iss, bin, tmp)
		if w != nil {
			worlds = append(worlds, w)
		}
		if err != nil {
			return nil, err
		}
		l, err := obtainAll(ctx, w, w.site(benchNames(n)))
		if err != nil {
			return nil, fmt.Errorf("%s, restart: %w", iss, err)
		}
		leaves = append(leaves, l)
	}
	var out []restart
	for rep := range repeat {
		for i, w := range worlds {
			r, err := runRestart(ctx, w, leaves[i], sweep && rep == repeat-1, nil)
			if err != nil {
				return nil, fmt.Errorf("%s, restart: %w", w.issuer, err)
			}
			fmt.Fprintf(os.Stderr, "%-8s restart, %d names: every name served in %.3f s, %s API requests",
				w.issuer, n, r.Seconds, requestsSaid(r.API))
			if r.Sweep != nil {
				fmt.Fprintf(os.Stderr, "; until the sweep (list seen: %t), %.1f s: %s API requests",
					r.SweepSeen, r.SweepSeconds, requestsSaid(*r.Sweep))
			}
			fmt.Fprintln(os.Stderr)
			out = append(out, r)
		}
	}
	if profileDir == "" {
		return out, nil
	}
	for i, w := range worlds {
		// The profile's length: the slowest restart's and a margin.
		slowest := 0.0
		for _, r := range out {
			if r.Issuer == w.issuer {
				slowest = max(slowest, r.Seconds)
			}
		}
		prof := &profiler{dir: profileDir, seconds: int(math.Ceil(1.5*slowest)) + 2}
		fmt.Fprintf(os.Stderr, "%-8s restart, %d names, profiled for %d s (not in the tables):\n", w.issuer, n, prof.seconds)
		if _, err := runRestart(ctx, w, leaves[i], false, prof); err != nil {
			return nil, fmt.Errorf("%s, profiled restart: %w", w.issuer, err)
		}
	}
	return out, nil
}

// inWorld runs f in a fresh world, closed afterwards whatever happens.
func inWorld(issuer, bin, tmp string, f func(*world) error) error {
	w, err := newWorld(issuer, bin, tmp)
	defer w.close()
	if err != nil {
		return err
	}
	return f(w)
}

func parseSizes(s string) ([]int, error) {
	var sizes []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-sizes: %q is not a positive number", f)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// parseIssuers checks -issuers' names and returns them in allIssuers'
// order.
func parseIssuers(s string) ([]string, error) {
	for iss := range strings.SplitSeq(s, ",") {
		if !slices.Contains(allIssuers, iss) {
			return nil, fmt.Errorf("-issuers: unknown issuer %q", iss)
		}
	}
	var issuers []string
	for _, iss := range allIssuers {
		if slices.Contains(strings.Split(s, ","), iss) {
			issuers = append(issuers, iss)
		}
	}
	return issuers, nil
}

// sourceDir is this module's folder, where `go run .` compiled it from, so
// that the command works from any working directory; the working directory
// if the build trimmed the paths.
func sourceDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "."
	}
	return filepath.Dir(file)
}

// results is what results.json holds.
type results struct {
	Date  string `json:"date"`
	CPUs  int    `json:"cpus"`
	OS    string `json:"os"`
	Go    string `json:"go"`
	Caddy string `json:"caddy"`
	// LoadStart and LoadEnd are the system's load averages (1, 5, 15
	// minutes) before and after the issuance runs: other work on the
	// machine slows the runs down.
	LoadStart string `json:"load_average_start"`
	LoadEnd   string `json:"load_average_end"`
	Pebble    string `json:"pebble"`
	// Pinned says which CPUs Caddy and the benchmark ran on (-pin); empty:
	// they shared them all.
	Pinned   string     `json:"pinned,omitempty"`
	Issuance []issuance `json:"issuance"`
	Skipped  []skipped  `json:"skipped,omitempty"`
	OnDemand []onDemand `json:"on_demand,omitempty"`
	Renewal  []renewal  `json:"renewal"`
	Restart  []restart  `json:"restart,omitempty"`
}

type skipped struct {
	Issuer string `json:"issuer"`
	Names  int    `json:"names"`
	Reason string `json:"reason"`
}

func newResults(caddyBin string) *results {
	r := &results{
		Date: time.Now().UTC().Format(time.DateOnly),
		CPUs: runtime.NumCPU(),
		OS:   runtime.GOOS + "/" + runtime.GOARCH,
		Go:   runtime.Version(),

		LoadStart: loadAverage(),
	}
	if v, err := exec.Command(caddyBin, "version").Output(); err == nil {
		r.Caddy = "Caddy " + strings.Fields(string(v))[0]
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/letsencrypt/pebble/v2" {
				r.Pebble = d.Version
			}
		}
	}
	return r
}

// loadAverage is the first three fields of /proc/loadavg, or "" where there
// is none.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

// pinned are the CPUs of Caddy and of the benchmark with -pin (nil: all).
var pinned cpuSplit

type cpuSplit struct{ caddy, bench []int }

// set gives Caddy every CPU but the last, the benchmark the last.
func (p *cpuSplit) set(cpus int) error {
	if cpus < 2 {
		return fmt.Errorf("%d CPU: nothing to split", cpus)
	}
	for c := range cpus - 1 {
		p.caddy = append(p.caddy, c)
	}
	p.bench = []int{cpus - 1}
	return pinProcess(p.bench)
}

func (p *cpuSplit) said() string {
	caddy := fmt.Sprint(p.caddy[0])
	if len(p.caddy) > 1 {
		caddy = fmt.Sprintf("%d-%d", p.caddy[0], p.caddy[len(p.caddy)-1])
	}
	return fmt.Sprintf("Caddy on CPU %s, the benchmark (the simulator, Pebble, the polling of storage) on CPU %d", caddy, p.bench[0])
}
