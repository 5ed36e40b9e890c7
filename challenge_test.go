package sslci_test

import (
	"context"
	"fmt"
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
