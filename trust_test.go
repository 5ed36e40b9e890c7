package sslci_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// A certificate that does not chain to a trusted root is refused however
// well it is made otherwise, with an error naming its issuer and
// trusted_roots, and nothing left behind: self-signed (its own "ca"), or
// from a CA whose root the issuer was not told to trust.
func TestIssueRefusesUntrustedCertificates(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(nil)
	for _, tc := range []struct {
		fault sslcitest.Fault
		want  string
	}{
		{sslcitest.FaultSelfSigned, `the certificate is self-signed ("untrusted.test")`},
		{sslcitest.FaultUnknownRoot, `chain ends at "SSLCI Simulator Intermediate CA `},
	} {
		t.Run(string(tc.fault), func(t *testing.T) {
			e.sim.InjectFault(sslcitest.OpFinalize, tc.fault, 1)
			csr, _ := sslcitest.NewCSR(t, "untrusted.test")
			_, err := iss.Issue(context.Background(), csr)
			if err == nil {
				t.Fatal("Issue accepted the certificate")
			}
			for _, want := range []string{"sslci: ", "untrusted.test was refused", tc.want, "add its root certificate with trusted_roots"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if strings.Count(err.Error(), "sslci: ") != 1 {
				t.Errorf("error %q does not say sslci: exactly once", err)
			}
			e.checkNothingLeft(t)
		})
	}
}

// trusted_roots also verifies the endpoint's HTTPS: without it a simulator
// in TLS mode is not even reached; with it, a Caddy site gets its
// certificate through it. No SSL_CERT_FILE is involved.
func TestTrustedRootsForTheEndpoint(t *testing.T) {
	e := newEnv(t, sslcitest.Options{TLS: true})
	if !strings.HasPrefix(e.sim.URL(), "https://") {
		t.Fatalf("the simulator's URL is %s, want https", e.sim.URL())
	}
	iss := e.startIssuer(map[string]any{"trusted_roots_pem_files": nil})
	csr, _ := sslcitest.NewCSR(t, "tls.test")
	if _, err := iss.Issue(context.Background(), csr); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("Issue without trusted_roots = %v, want a TLS error: unknown authority", err)
	}
	if n := len(e.sim.Requests()); n != 0 {
		t.Errorf("the simulator answered %d requests over TLS it should not have been trusted for", n)
	}
	e.stopCaddy()

	e.startCaddy(e.siteConfig("", "tls.test", ""))
	e.waitForCertificate("tls.test", nil, time.Minute)
	if _, body := e.get("tls.test", "/"); body != "hello from tls.test" {
		t.Errorf("body = %q", body)
	}
}

// On a renewal, a certificate the issuer refuses changes nothing: Caddy
// keeps serving the current one (and its key stays in storage), and its
// error log names the CA that made the refused one.
func TestRenewalRefusedKeepsCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a renewal")
	}
	// certmagic spaces out renewal attempts per name, over every Caddy of
	// the process: each case has a name of its own.
	for _, tc := range []struct {
		fault sslcitest.Fault
		name  string
		want  string
	}{
		{sslcitest.FaultSelfSigned, "self-signed.renew.test", `the certificate is self-signed ("self-signed.renew.test")`},
		{sslcitest.FaultUnknownRoot, "unknown-root.renew.test", `chain ends at "SSLCI Simulator Intermediate CA `},
	} {
		t.Run(string(tc.fault), func(t *testing.T) {
			// The first certificate made 89 days ago by SSLCI's clock (a
			// day left of 90): the next Caddy on this storage renews it as
			// it starts, with the fault already in place.
			e := newEnv(t, sslcitest.Options{})
			cfg := e.withLog(e.siteConfig("", tc.name, ""))
			e.sim.Advance(-89 * 24 * time.Hour)
			e.startCaddy(cfg)
			first := e.waitForCertificate(tc.name, nil, time.Minute)
			e.stopCaddy()
			e.sim.Advance(89 * 24 * time.Hour)
			e.sim.InjectFault(sslcitest.OpFinalize, tc.fault, 1000)
			e.sim.ResetRequests()
			e.startCaddy(cfg)

			entry := e.waitForLogLine("could not get certificate from issuer", time.Minute)
			msg, _ := entry["error"].(string)
			for _, want := range []string{tc.name, tc.want, "trusted_roots"} {
				if !strings.Contains(msg, want) {
					t.Errorf("logged error %q does not say %q", msg, want)
				}
			}
			if n := e.counts()[sslcitest.OpFinalize]; n < 1 {
				t.Errorf("the renewal made %d finalize requests: it did not reach SSLCI", n)
			}
			leaf, err := e.handshake(tc.name)
			if err != nil {
				t.Fatalf("handshake after the refused renewal: %v", err)
			}
			if !leaf.Equal(first) {
				t.Errorf("served certificate serial %x, want the current one's %x", leaf.SerialNumber, first.SerialNumber)
			}
			if !e.storedKeyMatches(tc.name, first) {
				t.Error("the private key in storage is no longer the current certificate's")
			}
		})
	}
}
