package sslci_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// A Caddyfile site for a wildcard and its apex, verified by DNS: Caddy gets
// both certificates through the module and a TLS client with SNI
// foo.example.test verifies the served chain. Every TXT record is gone
// afterwards.
func TestDNSWildcardSite(t *testing.T) {
	e, dnsSrv := newDNSEnv(t, "example.test")
	e.startCaddy(adapt(t, e.globalOptions("")+fmt.Sprintf(`
*.example.test, example.test {
	tls {
		issuer sslci {env.SSLCI_TEST_TOKEN} {
			endpoint %s
			trusted_roots %s
			dns testdns %s
			resolvers %s
			propagation_timeout 10s
		}
	}
	respond "wild {host}"
}
`, e.sim.URL(), e.rootFile, dnsSrv.Addr(), dnsSrv.Addr())))

	leaf := e.waitForCertificate("foo.example.test", nil, time.Minute)
	if leaf.DNSNames[0] != "*.example.test" {
		t.Errorf("certificate for foo.example.test names %v", leaf.DNSNames)
	}
	if _, body := e.get("foo.example.test", "/"); body != "wild foo.example.test" {
		t.Errorf("body = %q", body)
	}
	e.waitForCertificate("example.test", nil, time.Minute)
	// Caddy manages each site name as its own certificate: two of each.
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 2, sslcitest.OpConfirm: 2, sslcitest.OpFinalize: 2})
	if left := dnsSrv.TXT("_acme-challenge.example.test"); len(left) != 0 {
		t.Errorf("TXT records left in the zone: %v", left)
	}
}

// One certificate for a wildcard and its apex through Issue: both names
// are verified by DNS (one TXT name, two values at once), one finalize.
func TestDNSWildcardAndApexCertificate(t *testing.T) {
	e, dnsSrv := newDNSEnv(t, "example.test")
	iss := e.startIssuer(dnsFields(dnsSrv, "10s"))
	if iss.Method != "dns" {
		t.Errorf("method = %q, want dns by default with a provider", iss.Method)
	}
	csr, _ := sslcitest.NewCSR(t, "*.example.test", "example.test")
	start := time.Now()
	cert, err := iss.Issue(context.Background(), csr)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	t.Logf("wildcard+apex issuance: %s, %d API requests", time.Since(start), len(e.sim.Requests()))
	e.parseChain(cert.Certificate, "*.example.test", "example.test")
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 2, sslcitest.OpConfirm: 2, sslcitest.OpFinalize: 1})
	if left := dnsSrv.TXT("_acme-challenge.example.test"); len(left) != 0 {
		t.Errorf("TXT records left in the zone: %v", left)
	}
}

// The record appears late: the confirmation is sent only once DNS serves
// it (the simulator checks with a real query, so an early confirmation
// would fail). A record that never appears fails after
// propagation_timeout with a clear error; the order is cancelled, nothing
// was confirmed, and no record is left in the zone.
func TestDNSPropagation(t *testing.T) {
	e, dnsSrv := newDNSEnv(t, "late.test")
	iss := e.startIssuer(dnsFields(dnsSrv, "10s"))

	dnsSrv.SetDelay(2 * time.Second)
	csr, _ := sslcitest.NewCSR(t, "www.late.test")
	cert, err := iss.Issue(context.Background(), csr)
	if err != nil {
		t.Fatalf("Issue with a late record: %v", err)
	}
	e.keep(cert, "www.late.test") // as certmagic would: the restart below deletes one not kept
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1})
	if dnsSrv.Queries() < 2 {
		t.Errorf("the record was looked up %d times: the issuer did not wait for it", dnsSrv.Queries())
	}

	e.sim.ResetRequests()
	dnsSrv.SetDelay(0)
	dnsSrv.SetHidden(true)
	iss = e.restartIssuer(dnsFields(dnsSrv, "2s"))
	csr, _ = sslcitest.NewCSR(t, "never.late.test")
	_, err = iss.Issue(context.Background(), csr)
	if err == nil {
		t.Fatal("Issue succeeded with a record that never appears")
	}
	if want := "sslci: never.late.test: putting the dns challenge in place (order "; !strings.HasPrefix(err.Error(), want) || strings.Count(err.Error(), "never.late.test:") != 1 {
		t.Errorf("error %q does not start %q, naming the identifier once", err, want)
	}
	for _, want := range []string{"never.late.test", "_acme-challenge.never.late.test"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpRequest: 1, sslcitest.OpDelete: 1})
	e.checkNothingLeft(t)
	if left := dnsSrv.TXT("_acme-challenge.never.late.test"); len(left) != 0 {
		t.Errorf("TXT records left in the zone: %v", left)
	}
}
