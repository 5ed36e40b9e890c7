package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"
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
	if w.httpPort, err = freePort(); err != nil {
		return nil, err
	}
	if w.httpsPort, err = freePort(); err != nil {
		return nil, err
	}
	switch issuer {
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

func (w *world) site(names []string) site {
	return site{storage: filepath.Join(w.dir, "storage"), httpPort: w.httpPort, httpsPort: w.httpsPort,
		issuer: w.ca.issuer, names: names}
}

func (w *world) httpsAddr() string { return net.JoinHostPort("127.0.0.1", fmt.Sprint(w.httpsPort)) }

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
	Errors     int     `json:"caddy_errors_logged"`
}

func benchName(i int) string { return fmt.Sprintf("n%04d.bench.test", i) }

// runIssuance loads a config managing n names into a fresh Caddy, times
// until every certificate is stored, then checks that each is served.
func runIssuance(ctx context.Context, w *world, n int) (issuance, error) {
	res := issuance{Issuer: w.issuer, Names: n}
	names := make([]string, n)
	for i := range names {
		names[i] = benchName(i + 1)
	}
	p, err := startCaddy(ctx, w.caddyBin, w.dir, w.ca.env)
	if err != nil {
		return res, err
	}
	defer p.stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(n)*2*time.Second)
	defer cancel()
	s := w.site(names)
	before := w.ca.counts()
	start := time.Now()
	if err := p.load(ctx, s.config()); err != nil {
		return res, p.withLog(err)
	}
	if err := waitStored(ctx, s.storage, names); err != nil {
		return res, p.withLog(err)
	}
	res.Seconds = time.Since(start).Seconds()
	if err := verifyServed(ctx, w.httpsAddr(), names, w.ca.roots); err != nil {
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
	before := w.ca.counts()
	var next []float64
	for i := range n {
		name := fmt.Sprintf("od%02d.bench.test", i+1)
		start := time.Now()
		if _, err := handshake(ctx, w.httpsAddr(), name, w.ca.roots); err != nil {
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
	first, err := startCaddy(ctx, w.caddyBin, w.dir, w.ca.env)
	if err != nil {
		return res, err
	}
	err = first.load(ctx, s.config())
	if err == nil {
		err = waitStored(ctx, s.storage, []string{name})
	}
	first.stop()
	if err != nil {
		return res, first.withLog(err)
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
	before := w.ca.counts()
	start := time.Now()
	if err := p.load(ctx, s.config()); err != nil {
		return res, p.withLog(err)
	}
	if err := waitReplaced(ctx, s.storage, name, old); err != nil {
		return res, p.withLog(err)
	}
	res.Seconds = time.Since(start).Seconds()
	if err := verifyServed(ctx, w.httpsAddr(), []string{name}, w.ca.roots); err != nil {
		return res, p.withLog(err)
	}
	time.Sleep(time.Second)
	res.API = w.ca.counts().since(before)
	return res, nil
}
