package sslci_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// While SSLCI's check is pending, the challenge is answered on Caddy's HTTP
// port, but only to a GET of the exact path for the exact host.
func TestChallengeAnsweredOnlyAsAsked(t *testing.T) {
	t.Run("by Caddy's HTTP server", func(t *testing.T) {
		e := newEnv(t, sslcitest.Options{})
		e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1000)
		e.startCaddy(e.siteConfig("", "chal.test", "verification_timeout 1m"))
		e.probeChallenge("chal.test")
		e.sim.InjectFault(sslcitest.OpAny, sslcitest.FaultNone, 0)
		e.waitForCertificate("chal.test", nil, time.Minute)
	})
	t.Run("by the issuer where nothing listens", func(t *testing.T) {
		e := newEnv(t, sslcitest.Options{})
		e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1000)
		iss := e.startIssuer(map[string]any{"verification_timeout": "1m"})
		csr, _ := sslcitest.NewCSR(t, "chal.test")
		done := make(chan error, 1)
		go func() { _, err := iss.Issue(context.Background(), csr); done <- err }()
		e.probeChallenge("chal.test")
		e.sim.InjectFault(sslcitest.OpAny, sslcitest.FaultNone, 0)
		if err := <-done; err != nil {
			t.Fatalf("Issue: %v", err)
		}
		if _, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", e.httpPort)); err == nil {
			t.Error("the issuer's own listener is still up after the verification")
		}
	})
}

// A burst of new names costs one probe of what holds the HTTP port
// (checkPortHolder), not one per name: each challenge is read once for
// SSLCI's check, and once more in all for the probe.
func TestPortProbedOncePerBurst(t *testing.T) {
	var loads atomic.Int64
	t.Cleanup(sslci.CountStorageOps(func(string, string) {}, func(op, key string) {
		if op == "load" && strings.Contains(key, "/challenge_tokens/") {
			loads.Add(1)
		}
	}))
	const n = 48
	e := newEnv(t, sslcitest.Options{})
	e.startCaddy(e.manySites(n, ""))
	e.waitForIssued(n, 5*time.Minute)
	e.checkAllServed(n)
	if got := loads.Load(); got != n+1 {
		t.Errorf("challenges read %d times for %d names, want %d: once each for SSLCI's check, once for the probe of the port", got, n, n+1)
	}
}

// A port found held by another server is not bound again for 10 s: in a
// burst of checks, a bind costs the kernel a walk of every socket on the
// port. A server that left the port is noticed by the next try after that.
func TestPortInUseRemembered(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(nil)
	addr := fmt.Sprintf("127.0.0.1:%d", e.httpPort)
	holder, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if release, inUse := sslci.ListenForCheck(iss); !inUse {
		release()
		t.Fatal("the port another listener holds was taken")
	}
	holder.Close()
	release, inUse := sslci.ListenForCheck(iss)
	if !inUse {
		t.Error("the port found in use was bound again at once")
	}
	release()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("something listens on the port: the issuer bound it")
	}

	t.Cleanup(sslci.SetPortRebindInterval(0)) // as 10 s later
	release, inUse = sslci.ListenForCheck(iss)
	if inUse {
		t.Fatal("the port left free was not taken on the next try")
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Errorf("the issuer's own listener does not answer: %v", err)
	} else {
		c.Close()
	}
	release()
}

// A verification that starts before the HTTP app has bound the HTTP port
// (at a start, certmagic may begin obtaining tls.certificates.automate
// while the HTTP app is still starting: Caddy starts its apps in no fixed
// order) waits for the HTTP app's server and never takes that port: a
// fallback listener there would make the HTTP app's bind fail, and the
// whole config with it (seen at 10,000 names).
func TestFallbackLeavesTheHTTPAppsPort(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	e.startCaddy(e.siteConfig("", "app.test", ""))
	e.waitForCertificate("app.test", nil, time.Minute)
	iss := activeIssuers(t)[0]
	if !sslci.AwaitHTTPApp(iss) {
		t.Fatal("the HTTP app's server on the HTTP port is not seen")
	}
	// Stopped, the issuer keeps its config: its HTTP app has a server on
	// the port, which nothing listens on, as at a start.
	e.stopCaddy()
	sslci.ForgetPorts()
	addr := fmt.Sprintf("127.0.0.1:%d", e.httpPort)
	bound := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond) // the HTTP app's start, late
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			t.Cleanup(func() { ln.Close() })
		}
		bound <- err
	}()
	start := time.Now()
	if !sslci.AwaitHTTPApp(iss) {
		t.Error("the port of the HTTP app's server was taken for a fallback listener")
	}
	if err := <-bound; err != nil {
		t.Fatalf("the HTTP app could not bind its port: %v", err)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("the verification went on after %v, before the HTTP app's server listened", waited)
	}
}
