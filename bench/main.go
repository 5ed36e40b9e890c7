// Command bench compares, on this machine and on loopback only, the same
// Caddy obtaining certificates with its ACME issuer from Pebble (Let's
// Encrypt's test server) and with the sslci issuer from the SSLCI
// simulator: time for N new names, the first on-demand handshake, API
// requests and TCP connections per certificate, the cost of a renewal, and
// Caddy's peak memory. It writes results.json, results.md and results.svg.
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
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
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
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	sizesFlag := fs.String("sizes", "1,10,50,100,1000", "how many new names Caddy obtains certificates for, one run each")
	acmeMax := fs.Int("acme-max", 100, "skip ACME runs above this many names (Caddy's ACME rate limit of 10 orders per 10s makes 1000 names take ~17 minutes)")
	onDemandNames := fs.Int("on-demand", 5, "new names handshaken one after another in the on-demand run (0 skips it)")
	out := fs.String("out", filepath.Join(here, "results"), "where to write results.json, results.md and results.svg")
	issuersFlag := fs.String("issuers", issuerACME+","+issuerSSLCI, "which issuers to run")
	repeat := fs.Int("repeat", 3, "runs of each issuer and size; the tables show the median run")
	keep := fs.Bool("keep", false, "keep the temporary folder (Caddy's and Pebble's logs, storage)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sizes, err := parseSizes(*sizesFlag)
	if err != nil {
		return err
	}
	issuers := strings.Split(*issuersFlag, ",")
	for _, iss := range issuers {
		if iss != issuerACME && iss != issuerSSLCI {
			return fmt.Errorf("-issuers: unknown issuer %q", iss)
		}
	}
	log.SetOutput(io.Discard) // Pebble's package-level log lines

	tmp, err := os.MkdirTemp("", "sslci-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if *keep || (err != nil && !errors.Is(err, context.Canceled)) {
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
	fmt.Fprintf(os.Stderr, "%s, %d CPUs; Pebble %s\n", res.Caddy, res.CPUs, res.Pebble)

	for _, n := range sizes {
		for _, iss := range issuers {
			if iss == issuerACME && n > *acmeMax {
				reason := fmt.Sprintf("not run (-acme-max %d): about %d s at Caddy's ACME rate limit of 10 orders per 10 s", *acmeMax, n)
				fmt.Fprintf(os.Stderr, "%-5s %5d names: %s\n", iss, n, reason)
				res.Skipped = append(res.Skipped, skipped{Issuer: iss, Names: n, Reason: reason})
				continue
			}
			for range max(*repeat, 1) {
				var r issuance
				err = inWorld(iss, bin, tmp, func(w *world) (e error) { r, e = runIssuance(ctx, w, n); return })
				if err != nil {
					return fmt.Errorf("%s, %d names: %w", iss, n, err)
				}
				fmt.Fprintf(os.Stderr, "%-5s %5d names: %8.3f s, %d API requests, %d TCP connections, Caddy %.2f s CPU, peak %d MiB, %d errors logged\n",
					iss, n, r.Seconds, r.API.Requests, r.API.Conns, r.CPUSeconds, r.PeakKiB/1024, r.Errors)
				res.Issuance = append(res.Issuance, r)
			}
		}
	}
	res.LoadEnd = loadAverage()
	for _, iss := range issuers {
		if *onDemandNames > 0 {
			var r onDemand
			err = inWorld(iss, bin, tmp, func(w *world) (e error) { r, e = runOnDemand(ctx, w, *onDemandNames); return })
			if err != nil {
				return fmt.Errorf("%s, on demand: %w", iss, err)
			}
			fmt.Fprintf(os.Stderr, "%-5s on demand: first handshake %.1f ms, next %.1f ms, %d API requests for %d names\n",
				iss, r.FirstMs, r.NextMs, r.API.Requests, r.Names)
			res.OnDemand = append(res.OnDemand, r)
		}
		var r renewal
		err = inWorld(iss, bin, tmp, func(w *world) (e error) { r, e = runRenewal(ctx, w); return })
		if err != nil {
			return fmt.Errorf("%s, renewal: %w", iss, err)
		}
		fmt.Fprintf(os.Stderr, "%-5s renewal: %.3f s, %d API requests, %d TCP connections\n",
			iss, r.Seconds, r.API.Requests, r.API.Conns)
		res.Renewal = append(res.Renewal, r)
	}
	if err = res.write(*out); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", filepath.Join(*out, "results.{json,md,svg}"))
	return nil
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
	LoadStart string     `json:"load_average_start"`
	LoadEnd   string     `json:"load_average_end"`
	Pebble    string     `json:"pebble"`
	Issuance  []issuance `json:"issuance"`
	Skipped   []skipped  `json:"skipped,omitempty"`
	OnDemand  []onDemand `json:"on_demand,omitempty"`
	Renewal   []renewal  `json:"renewal"`
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
