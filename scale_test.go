package sslci_test

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"

	sslci "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// manySites is a Caddyfile with the issuer as the global cert_issuer and n
// sites, n0.scale.test to n<n-1>.scale.test, each a site block of its own.
func (e *testEnv) manySites(n int, issuerExtra string) []byte {
	e.t.Helper()
	if issuerExtra != "" {
		issuerExtra = "\n\t\t" + issuerExtra
	}
	var b strings.Builder
	b.WriteString(e.globalOptions(fmt.Sprintf("cert_issuer sslci {env.SSLCI_TEST_TOKEN} {\n\t\tendpoint %s%s\n\t}", e.sim.URL(), issuerExtra)))
	for i := range n {
		fmt.Fprintf(&b, "\nn%d.scale.test {\n\trespond \"hello\"\n}\n", i)
	}
	return adapt(e.t, b.String())
}

// waitForIssued waits until the simulator has issued n certificates.
func (e *testEnv) waitForIssued(n int, limit time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for len(e.sim.Certificates(e.sim.Token())) < n {
		if time.Now().After(deadline) {
			e.t.Fatalf("%d certificates issued within %s, want %d; requests: %v", len(e.sim.Certificates(e.sim.Token())), limit, n, e.counts())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkAllServed checks that Caddy serves a verifying certificate for each
// of the n names.
func (e *testEnv) checkAllServed(n int) {
	e.t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	sem := make(chan struct{}, 8)
	for i := range n {
		name := fmt.Sprintf("n%d.scale.test", i)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var err error
			for range 100 { // certmagic caches a certificate just after storing it
				if _, err = e.handshake(name); err == nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			mu.Lock()
			failed = append(failed, name+": "+err.Error())
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		e.t.Errorf("%d of %d names not served, e.g. %s", len(failed), n, failed[0])
	}
}

// sslciIssuers returns the provisioned sslci issuers of the running config.
func sslciIssuers(t testing.TB) []*sslci.Issuer {
	t.Helper()
	app, err := caddy.ActiveContext().App("tls")
	if err != nil {
		t.Fatal(err)
	}
	var out []*sslci.Issuer
	for _, ap := range app.(*caddytls.TLS).Automation.Policies {
		for _, iss := range ap.Issuers {
			if s, ok := iss.(*sslci.Issuer); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// TestScaleStart is a measurement, not a test: it starts a real Caddy
// with SSLCI_SCALE sites and reports how long the last certificate took,
// how many connections and requests in flight the simulator saw, and with
// SSLCI_SCALE_CPUPROFILE=<file> writes a CPU profile of the whole process
// (Caddy, the issuer and the simulator) over the run.
func TestScaleStart(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SSLCI_SCALE"))
	if n <= 0 {
		t.Skip("set SSLCI_SCALE=<number of sites> to measure")
	}
	e := newEnv(t, sslcitest.Options{})
	cfg := e.manySites(n, os.Getenv("SSLCI_SCALE_ISSUER"))
	if path := os.Getenv("SSLCI_SCALE_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	e.startCaddy(cfg)
	loaded := time.Since(start)
	e.waitForIssued(n, 5*time.Minute)
	took := time.Since(start)
	t.Logf("%d sites: config loaded in %s, last certificate issued %s after the start; %d issuer instance(s); "+
		"%d TCP connections to the API, %d requests in flight at most; requests %v",
		n, loaded.Round(time.Millisecond), took.Round(time.Millisecond), len(sslciIssuers(t)),
		e.sim.Connections(), e.sim.PeakInFlight(), e.counts())
	e.checkAllServed(n)
}
