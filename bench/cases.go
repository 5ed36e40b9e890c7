package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/sslci/caddy-sslci/internal/testport"
)

// world is one case's CA, Caddy ports and folder; every case starts anew.
type world struct {
	issuer              string
	dir                 string
	httpPort, httpsPort int
	ca                  *backend
	caddyBin            string
}

func newWorld(issuer, caddyBin, parent string) (*world, error) {
	w := &world{issuer: issuer, caddyBin: caddyBin}
	var err error
	if w.dir, err = os.MkdirTemp(parent, issuer+"-"); err != nil {
		return nil, err
	}
	if w.httpPort, err = testport.Free(); err != nil {
		return nil, err
	}
	if w.httpsPort, err = testport.Free(); err != nil {
		return nil, err
	}
	switch issuer {
	case issuerInternal:
		w.ca = newInternal(w.storage())
	case issuerACME:
		w.ca, err = newPebble(w.dir, w.httpPort, w.httpsPort)
	case issuerSSLCI:
		w.ca, err = newSSLCI(w.dir, net.JoinHostPort("127.0.0.1", fmt.Sprint(w.httpPort)), w.httpPort)
	}
	return w, err
}

func (w *world) close() {
	if w != nil && w.ca != nil {
		w.ca.close()
	}
}

func (w *world) storage() string { return filepath.Join(w.dir, "storage") }

func (w *world) site(names []string) site {
	return site{storage: w.storage(), httpPort: w.httpPort, httpsPort: w.httpsPort,
		issuer: w.ca.issuer, apps: w.ca.apps, names: names}
}

func (w *world) httpsAddr() string { return net.JoinHostPort("127.0.0.1", fmt.Sprint(w.httpsPort)) }

// roots verify the certificates of the world's CA; Caddy's local CA has
// its root once a config has been loaded.
func (w *world) roots() (*x509.CertPool, error) {
	if w.ca.rootFile == "" {
		return w.ca.roots, nil
	}
	data, err := os.ReadFile(w.ca.rootFile)
	if err != nil {
		return nil, fmt.Errorf("the local CA's root: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("the local CA's root: no certificate in %s", w.ca.rootFile)
	}
	return pool, nil
}

// issuance is one run of Caddy obtaining certificates for some names.
type issuance struct {
	Issuer  string   `json:"issuer"`
	Names   int      `json:"names"`
	Seconds float64  `json:"seconds"` // config load to the last certificate in storage
	API     snapshot `json:"api"`
	PeakKiB int      `json:"caddy_peak_rss_kib"`
	// CPUSeconds is the CPU time Caddy used, from its start to the end of
	// the run (the checks of every name included).
	CPUSeconds float64 `json:"caddy_cpu_seconds"`
	// BenchCPUSeconds is the benchmark process's own CPU time from the
	// config load to the last certificate in storage: the simulator's or
	// Pebble's work, which a real CA does on its own machines, plus the
	// benchmark's polling of storage (all of it for the local CA).
	BenchCPUSeconds float64 `json:"bench_cpu_seconds"`
	Errors          int     `json:"caddy_errors_logged"`
}

func benchName(i int) string { return fmt.Sprintf("n%04d.bench.test", i) }

func benchNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = benchName(i + 1)
	}
	return names
}

// runIssuance loads a config managing n names into a fresh Caddy, times
// until every certificate is stored, then checks that each is served. With
// prof, Caddy's CPU profile covers the run, and its allocations are taken
// once every certificate is stored.
func runIssuance(ctx context.Context, w *world, n int, prof *profiler) (issuance, error) {
	res := issuance{Issuer: w.issuer, Names: n}
	names := benchNames(n)
	p, err := startCaddy(ctx, w.caddyBin, w.dir, w.ca.env)
	if err != nil {
		return res, err
	}
	defer p.stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(n)*2*time.Second)
	defer cancel()
	var cpuProfile func() ([]byte, error)
	if prof != nil {
		if cpuProfile, err = p.startCPUProfile(ctx, prof.seconds); err != nil {
			return res, p.withLog(err)
		}
	}
	s := w.site(names)
	var benchProfile func() []byte
	if prof != nil {
		if benchProfile, err = startBenchProfile(); err != nil {
			return res, err
		}
	}
	flushDisk()
	before := w.ca.counts()
	benchCPU := selfCPU()
	start := time.Now()
	if err := p.load(ctx, s.config()); err != nil {
		return res, p.withLog(err)
	}
	if err := waitStored(ctx, s.storage, names); err != nil {
		return res, p.withLog(err)
	}
	res.Seconds = time.Since(start).Seconds()
	res.BenchCPUSeconds = selfCPU() - benchCPU
	if prof != nil {
		// The profile ends before the checks below, their handshakes not in it.
		if err := prof.save(ctx, p, fmt.Sprintf("%s-%d", w.issuer, n), cpuProfile, benchProfile()); err != nil {
			return res, err
		}
		if res.Seconds > float64(prof.seconds) {
			fmt.Fprintf(os.Stderr, "warning: the run took %.1f s, its CPU profile only the first %d s\n", res.Seconds, prof.seconds)
		}
	}
	roots, err := w.roots()
	if err != nil {
		return res, p.withLog(err)
	}
	if err := verifyServed(ctx, w.httpsAddr(), names, roots, nil); err != nil {
		return res, p.withLog(err)
	}
	res.API = w.ca.counts().since(before)
	res.PeakKiB = p.peakRSS()
	res.CPUSeconds = p.cpuSeconds()
	res.Errors = p.errorsLogged()
	return res, nil
}

// onDemand is the cost of certificates obtained during a TLS handshake.
type onDemand struct {
	Issuer string `json:"issuer"`
	// FirstMs is the first handshake for a new name, Caddy just started:
	// it includes what the issuer sets up once (an ACME account).
	FirstMs float64 `json:"first_handshake_ms"`
	// NextMs is the median first handshake of the next new names.
	NextMs float64  `json:"next_handshake_ms"`
	Names  int      `json:"names"`
	API    snapshot `json:"api"`
}

// runOnDemand starts Caddy with on-demand TLS and no names, then makes the
// first handshake for new names, one after another.
func runOnDemand(ctx context.Context, w *world, n int) (onDemand, error) {
	res := onDemand{Issuer: w.issuer, Names: n}
	ask, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	askSrv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	go askSrv.Serve(ask)
	defer askSrv.Close()

	p, err := startCaddy(ctx, w.caddyBin, w.dir, w.ca.env)
	if err != nil {
		return res, err
	}
	defer p.stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	s := w.site(nil)
	s.onDemandAsk = "http://" + ask.Addr().String() + "/ask"
	if err := p.load(ctx, s.config()); err != nil {
		return res, p.withLog(err)
	}
	roots, err := w.roots()
	if err != nil {
		return res, p.withLog(err)
	}
	before := w.ca.counts()
	var next []float64
	for i := range n {
		name := fmt.Sprintf("od%02d.bench.test", i+1)
		start := time.Now()
		if _, err := handshake(ctx, w.httpsAddr(), name, roots); err != nil {
			return res, p.withLog(fmt.Errorf("on-demand handshake for %s: %w", name, err))
		}
		ms := float64(time.Since(start).Microseconds()) / 1000
		if i == 0 {
			res.FirstMs = ms
		} else {
			next = append(next, ms)
		}
	}
	res.API = w.ca.counts().since(before)
	if len(next) > 0 {
		slices.Sort(next)
		res.NextMs = next[len(next)/2]
	}
	return res, nil
}

// renewal is the cost of renewing one certificate.
type renewal struct {
	Issuer  string   `json:"issuer"`
	Seconds float64  `json:"seconds"` // config load to the renewed certificate in storage
	API     snapshot `json:"api"`
}

// runRenewal obtains a certificate with one Caddy, then starts another on
// the same storage whose policy puts it in its renewal window at once, and
// counts the requests until the renewed certificate is served and one
// quiet second has passed.
func runRenewal(ctx context.Context, w *world) (renewal, error) {
	res := renewal{Issuer: w.issuer}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	name := "renew.bench.test"
	s := w.site([]string{name})
	if _, err := obtainAll(ctx, w, s); err != nil {
		return res, err
	}
	old := storedCert(s.storage, name)

	p, err := startCaddy(ctx, w.caddyBin, w.dir, w.ca.env)
	if err != nil {
		return res, err
	}
	defer p.stop()
	// A window of all but a billionth of the lifetime: due now, whatever
	// the lifetime.
	s.renewalRatio = 1 - 1e-9
	flushDisk()
	before := w.ca.counts()
	start := time.Now()
	if err := p.load(ctx, s.config()); err != nil {
		return res, p.withLog(err)
	}
	if err := waitReplaced(ctx, s.storage, name, old); err != nil {
		return res, p.withLog(err)
	}
	res.Seconds = time.Since(start).Seconds()
	roots, err := w.roots()
	if err != nil {
		return res, p.withLog(err)
	}
	if err := verifyServed(ctx, w.httpsAddr(), []string{name}, roots, nil); err != nil {
		return res, p.withLog(err)
	}
	time.Sleep(time.Second)
	res.API = w.ca.counts().since(before)
	return res, nil
}

// obtainAll has a Caddy obtain the certificates of s's names, stops it, and
// returns each name's stored leaf (DER).
func obtainAll(ctx context.Context, w *world, s site) (map[string][]byte, error) {
	p, err := startCaddy(ctx, w.caddyBin, w.dir, w.ca.env)
	if err != nil {
		return nil, err
	}
	err = p.load(ctx, s.config())
	if err == nil {
		err = waitStored(ctx, s.storage, s.names)
	}
	p.stop()
	if err != nil {
		return nil, p.withLog(err)
	}
	leaves := make(map[string][]byte, len(s.names))
	for _, name := range s.names {
		block, _ := pem.Decode(storedCert(s.storage, name))
		if block == nil {
			return nil, fmt.Errorf("no certificate stored for %s", name)
		}
		leaves[name] = block.Bytes
	}
	return leaves, nil
}

// restart is a Caddy started on storage that holds every certificate
// already, until it serves each name the stored one.
type restart struct {
	Issuer  string  `json:"issuer"`
	Names   int     `json:"names"`
	Seconds float64 `json:"seconds"` // config load to every name served its stored certificate
	// API is the CA's traffic from Caddy's start until every name is served.
	API snapshot `json:"api"`
	// Sweep, with -restart-sweep, is the traffic from Caddy's start until
	// the sweep's list and a quiet second after it, or until SweepSeconds
	// (75 s) if no list came.
	Sweep        *snapshot `json:"api_until_sweep,omitempty"`
	SweepSeconds float64   `json:"sweep_seconds,omitempty"`
	SweepSeen    bool      `json:"sweep_list_seen,omitempty"`
}

// A stopped Caddy's sweep runs a minute after the start (sweepDelay in
// the module): 75 s is enough to see it.
const sweepWait = 75 * time.Second

// runRestart starts a Caddy on w's storage, in which obtainAll stored
// leaves, loads the same config, and times until every name is served its
// stored certificate. With sweep, it then waits for the sslci issuer's
// sweep. With prof, Caddy's CPU profile covers the restart.
func runRestart(ctx context.Context, w *world, leaves map[string][]byte, sweep bool, prof *profiler) (restart, error) {
	names := slices.Sorted(maps.Keys(leaves))
	res := restart{Issuer: w.issuer, Names: len(names)}
	ctx, cancel := context.WithTimeout(ctx, time.Minute+sweepWait+time.Duration(len(names))*2*time.Second)
	defer cancel()
	before := w.ca.counts()
	p, err := startCaddy(ctx, w.caddyBin, w.dir, w.ca.env)
	if err != nil {
		return res, err
	}
	defer p.stop()
	roots, err := w.roots()
	if err != nil {
		return res, err
	}
	var cpuProfile func() ([]byte, error)
	if prof != nil {
		if cpuProfile, err = p.startCPUProfile(ctx, prof.seconds); err != nil {
			return res, p.withLog(err)
		}
	}
	flushDisk()
	start := time.Now()
	if err := p.load(ctx, w.site(names).config()); err != nil {
		return res, p.withLog(err)
	}
	if err := verifyServed(ctx, w.httpsAddr(), names, roots, leaves); err != nil {
		return res, p.withLog(err)
	}
	res.Seconds = time.Since(start).Seconds()
	if prof != nil {
		if err := prof.save(ctx, p, fmt.Sprintf("%s-%d-restart", w.issuer, len(names)), cpuProfile, nil); err != nil {
			return res, err
		}
	}
	res.API = w.ca.counts().since(before)
	if !sweep || w.issuer != issuerSSLCI {
		return res, nil
	}
	lists := res.API.ByKind["list"]
	last := res.API
	for quietSince := time.Now(); time.Since(start) < sweepWait; {
		time.Sleep(100 * time.Millisecond)
		cur := w.ca.counts().since(before)
		if cur.Requests != last.Requests {
			last, quietSince = cur, time.Now()
		}
		res.SweepSeen = last.ByKind["list"] > lists
		if res.SweepSeen && time.Since(quietSince) >= time.Second {
			break
		}
	}
	res.Sweep, res.SweepSeconds = &last, time.Since(start).Seconds()
	return res, nil
}
