package sslci_test

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sslci/caddy-sslci/api"
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
	b.WriteString(e.globalOptions(fmt.Sprintf("cert_issuer sslci {env.SSLCI_TEST_TOKEN} {\n\t\tendpoint %s\n\t\ttrusted_roots %s%s\n\t}", e.sim.URL(), e.rootFile, issuerExtra)))
	for i := range n {
		fmt.Fprintf(&b, "\nn%d.scale.test {\n\trespond \"hello\"\n}\n", i)
	}
	return adapt(e.t, b.String())
}

// TestManySitesBounded starts a real Caddy with 200 sites at once: every
// certificate is obtained with three requests per name, while the
// simulator never sees more requests in flight, nor more connections in
// all, than the bound (default 16, or max_concurrent_requests). The
// transport keeps at most that many connections and reuses them, and
// nothing here makes one close (no fault, no idle timeout reached), so
// the count of connections has no slack.
func TestManySitesBounded(t *testing.T) {
	const n = 48
	for _, tc := range []struct {
		extra string
		bound int
	}{{"", api.DefaultMaxConcurrent}, {"max_concurrent_requests 4", 4}} {
		t.Run(fmt.Sprintf("bound=%d", tc.bound), func(t *testing.T) {
			e := newEnv(t, sslcitest.Options{})
			e.startCaddy(e.manySites(n, tc.extra))
			e.waitForIssued(n, 5*time.Minute)
			e.checkAllServed(n)
			e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: n, sslcitest.OpConfirm: n, sslcitest.OpFinalize: n}) // and the ledger's one list per account
			if got := len(activeIssuers(t)); got != 1 {
				t.Errorf("%d sslci issuers provisioned for a global cert_issuer, want 1", got)
			}
			if peak := e.sim.PeakInFlight(); peak > tc.bound {
				t.Errorf("%d requests in flight at once, want at most %d", peak, tc.bound)
			}
			if conns := e.sim.Connections(); conns > int64(tc.bound) {
				t.Errorf("%d connections to the API, want at most %d", conns, tc.bound)
			}
			t.Logf("%d sites: peak %d in flight, %d connections", n, e.sim.PeakInFlight(), e.sim.Connections())
		})
	}
}

// Sites whose issuer blocks differ in something other than the client's
// settings get an issuer each (one per automation policy), and still share
// one client: the bound holds over all of them.
func TestIssuersShareTheBound(t *testing.T) {
	const n, bound = 48, 4
	e := newEnv(t, sslcitest.Options{})
	var b strings.Builder
	b.WriteString(e.globalOptions(""))
	for i := range n {
		extra := "max_concurrent_requests 4"
		if i%2 == 1 {
			extra += "\n\t\t\tverification_timeout 2m"
		}
		fmt.Fprintf(&b, "\nn%d.scale.test {\n\ttls {\n\t\t%s\n\t}\n\trespond \"hello\"\n}\n", i, e.issuerBlock(extra))
	}
	e.startCaddy(adapt(t, b.String()))
	e.waitForIssued(n, 5*time.Minute)
	e.checkAllServed(n)
	issuers := activeIssuers(t)
	if len(issuers) < 2 {
		t.Fatalf("%d sslci issuers, want one per distinct issuer block (2)", len(issuers))
	}
	if peak := e.sim.PeakInFlight(); peak > bound {
		t.Errorf("%d requests in flight at once over %d issuers, want at most %d", peak, len(issuers), bound)
	}
	if conns := e.sim.Connections(); conns > bound {
		t.Errorf("%d connections to the API over %d issuers, want at most %d", conns, len(issuers), bound)
	}
	t.Logf("%d issuers: peak %d in flight, %d connections", len(issuers), e.sim.PeakInFlight(), e.sim.Connections())
}

// max_concurrent_requests is read from the Caddyfile and JSON alike, and
// checked by Provision.
func TestMaxConcurrentRequestsConfig(t *testing.T) {
	iss, err := configuredIssuer(nil, "max_concurrent_requests 4")
	if err != nil || iss.MaxConcurrentRequests != 4 {
		t.Errorf("Caddyfile max_concurrent_requests 4: %+v, %v", iss.MaxConcurrentRequests, err)
	}
	for _, block := range []string{"max_concurrent_requests", "max_concurrent_requests four", "max_concurrent_requests 4 5"} {
		if _, err := configuredIssuer(nil, block); err == nil {
			t.Errorf("Caddyfile %q was accepted", block)
		}
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for _, cfg := range []struct {
		json  map[string]any
		block string
	}{{json: map[string]any{"max_concurrent_requests": -1}}, {block: "max_concurrent_requests -1"}} {
		iss, err := configuredIssuer(cfg.json, cfg.block)
		if err == nil {
			err = iss.Provision(ctx)
		}
		if err == nil || !strings.Contains(err.Error(), "max_concurrent_requests -1 is negative") {
			t.Errorf("%v%s: Provision = %v, want a negative-bound error", cfg.json, cfg.block, err)
		}
	}
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
	stopProfile := func() {}
	if path := os.Getenv("SSLCI_SCALE_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		stopProfile = pprof.StopCPUProfile
		defer stopProfile()
	}
	cpuBefore := cpuTime()
	start := time.Now()
	e.startCaddy(cfg)
	loaded := time.Since(start)
	e.waitForIssued(n, 5*time.Minute)
	took := time.Since(start)
	cpu := cpuTime() - cpuBefore
	stopProfile()
	t.Logf("%d sites: config loaded in %s, last certificate issued %s after the start, %s of CPU (the simulator's included); %d issuer instance(s); "+
		"%d TCP connections to the API, %d requests in flight at most; requests %v",
		n, loaded.Round(time.Millisecond), took.Round(time.Millisecond), cpu.Round(time.Millisecond), len(activeIssuers(t)),
		e.sim.Connections(), e.sim.PeakInFlight(), e.counts())
	e.checkAllServed(n)
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
