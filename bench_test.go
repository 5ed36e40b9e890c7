package sslci_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// BenchmarkIssue measures one issuance through the issuer against the
// in-process simulator over loopback HTTP, and counts the API requests it
// costs. "fresh" verifies every name each time (SSLCI's and our records of
// past verifications are wiped); "reuse" is a renewal inside the 29-day
// window. Time and allocations include the simulator's own work (its key
// and certificate generation), which runs in the same process.
func BenchmarkIssue(b *testing.B) {
	for _, bc := range []struct {
		names int
		reuse bool
	}{{1, false}, {3, false}, {3, true}} {
		mode := "fresh"
		if bc.reuse {
			mode = "reuse"
		}
		b.Run(fmt.Sprintf("names=%d/%s", bc.names, mode), func(b *testing.B) {
			e := newEnv(b, sslcitest.Options{SignCSR: true})
			iss := e.startIssuer(nil)
			var names []string
			for i := range bc.names {
				names = append(names, fmt.Sprintf("n%d.bench.test", i))
			}
			csr, _ := sslcitest.NewCSR(b, names...)
			ctx := context.Background()
			cert, err := iss.Issue(ctx, csr)
			if err != nil {
				b.Fatal(err)
			}
			e.keep(cert, names...)
			e.sim.ResetRequests()
			b.ReportAllocs()
			for b.Loop() {
				if !bc.reuse {
					e.forgetVerifications()
				}
				if cert, err = iss.Issue(ctx, csr); err != nil {
					b.Fatal(err)
				}
				// Stored as certmagic does: a certificate Issue returned
				// and storage does not hold is deleted at SSLCI next time.
				e.keep(cert, names...)
			}
			b.ReportMetric(float64(len(e.sim.Requests()))/float64(b.N), "api-requests/op")
		})
	}
}

// BenchmarkIssueDNSWildcard measures one wildcard-plus-apex issuance by the
// DNS method: TXT records through the test provider into a loopback DNS
// server, propagation checked by real queries, every name verified afresh.
func BenchmarkIssueDNSWildcard(b *testing.B) {
	e, dnsSrv := newDNSEnv(b, "bench.test")
	iss := e.startIssuer(dnsFields(dnsSrv, "10s"))
	csr, _ := sslcitest.NewCSR(b, "*.bench.test", "bench.test")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		e.forgetVerifications()
		if _, err := iss.Issue(ctx, csr); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(e.sim.Requests()))/float64(b.N), "api-requests/op")
}
