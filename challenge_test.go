package sslci_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

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
