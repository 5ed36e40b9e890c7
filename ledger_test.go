package sslci_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sslci "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// An answer lost after SSLCI processed the request, for each operation,
// lost (connection closed) or cut off: the issuance finishes within the
// one Issue certmagic made (no certmagic retry), leaving no order pending
// and exactly the certificate Caddy stores. A finalize whose answer was
// lost made a certificate: it is found in the list and deleted (the
// "delete" case loses that DELETE's answer too).
func TestLostAnswerEachOperation(t *testing.T) {
	for _, kind := range []sslcitest.Fault{sslcitest.FaultLostAfter, sslcitest.FaultCutAfter} {
		for _, op := range []sslcitest.Op{sslcitest.OpList, sslcitest.OpRequest, sslcitest.OpConfirm, sslcitest.OpFinalize, sslcitest.OpDelete} {
			t.Run(fmt.Sprintf("%s/%s", kind, op), func(t *testing.T) {
				e := newEnv(t, sslcitest.Options{})
				name := fmt.Sprintf("%s.%s.lost.test", op, strings.ReplaceAll(string(kind), "_", "-"))
				e.sim.InjectFault(op, kind, 1)
				if op == sslcitest.OpDelete {
					e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultLostAfter, 1)
				}
				cfg := e.withLog(e.siteConfig("", name, ""))
				e.startCaddy(cfg)
				e.waitForCertificate(name, nil, 2*time.Minute)

				if !e.faultSeen(op, kind) {
					t.Fatalf("the simulator applied no %s to a %s request: %+v", kind, op, e.sim.Requests())
				}
				if n, failed := e.issueCalls(name); n != 1 || failed != 0 {
					t.Errorf("certmagic called Issue %d times (%d failed), want once", n, failed)
				}
				e.checkEndState(t, []string{name}, nil, nil)
				t.Logf("requests: %v", e.counts())
			})
		}
	}
}

// Fifty names at once, through Caddy, with faults drawn by seeded dice:
// every name is obtained, each in one Issue; nothing is left pending and
// SSLCI holds exactly the certificates Caddy stores. The time is logged,
// not asserted.
func TestFaultsFiftyNames(t *testing.T) {
	if testing.Short() {
		t.Skip("fifty issuances")
	}
	for _, tc := range []struct {
		name  string
		rates sslcitest.FaultRates
	}{
		{"lost 10%", sslcitest.FaultRates{LostAfter: 0.05, CutAfter: 0.05}},
		{"mixed 20%", sslcitest.FaultRates{ServerError: 0.03, HTML: 0.03, Drop: 0.03, MalformedJSON: 0.03, RateLimit: 0.02, LostAfter: 0.03, CutAfter: 0.03}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer sslci.SetBackoffs(20*time.Millisecond, 200*time.Millisecond)()
			e := newEnv(t, sslcitest.Options{Faults: tc.rates, Seed: 7})
			var names []string
			for i := range 50 {
				names = append(names, fmt.Sprintf("n%02d.fifty.test", i))
			}
			cfg := e.withLog(e.siteConfig("", strings.Join(names, ", "), ""))
			start := time.Now()
			e.startCaddy(cfg)
			e.waitAll(names, 3*time.Minute)
			took := time.Since(start)

			faults := map[sslcitest.Fault]int{}
			for _, r := range e.sim.Requests() {
				if r.Fault != sslcitest.FaultNone {
					faults[r.Fault]++
				}
			}
			issues, failed := 0, 0
			for _, name := range names {
				n, f := e.issueCalls(name)
				issues, failed = issues+n, failed+f
			}
			t.Logf("50 names in %s; %d Issue calls (%d failed); requests %v; faults %v; pending orders %d; certificates at SSLCI %d",
				took.Round(time.Millisecond), issues, failed, e.counts(), faults, len(e.sim.PendingOrders(e.sim.Token())), len(e.sim.Certificates(e.sim.Token())))
			if issues != 50 || failed != 0 {
				var why []string
				for _, line := range e.logLines("could not get certificate from issuer") {
					why = append(why, fmt.Sprint(line["identifier"], ": ", line["error"]))
					for _, l := range e.logLinesWith(fmt.Sprint(line["identifier"])) {
						if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`) {
							why = append(why, "    "+l)
						}
					}
				}
				t.Errorf("%d Issue calls, %d failed: want 50, each succeeding; failed with:\n%s", issues, failed, strings.Join(why, "\n"))
			}
			e.checkEndState(t, names, nil, nil)
		})
	}
}

// A Caddy dies in the middle of an issuance (its storage stops at a
// chosen write: nothing it would do next happens), and a fresh Caddy on
// the same storage takes over: the end state is exactly the certificate
// it stores, no order pending. An order whose answer is recorded is
// resumed, not requested again (for the HTTP method the answer is kept
// with the challenge: a crash before it is stored costs a new order, the
// one made being cancelled; internal/ledger's TestAnswerKeptWithChallenge
// reads it back).
func TestCrashThenFreshCaddy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		crashAt string
		nth     int
		resumed bool
	}{
		{"order made, answer not recorded", "/ledger/orders/", 2, false},
		{"challenge being put in place", "challenge_tokens", 1, false},
		// The finalize's answer is written nowhere but in what certmagic
		// stores (ledger.Link): a crash before that leaves the record "sent".
		{"certificate made, its key not stored", ".key", 1, false},
		{"certificate returned, not stored", ".crt", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, sslcitest.Options{})
			name := "crash.test"
			plan := newFaultPlan(tc.nth, crashWrites)
			plan.match = tc.crashAt
			cfg := e.siteConfig("", name, "")
			e.startCaddy(e.withStorage(cfg, faultStorageConfig(t, e.storageDir, plan)))
			select {
			case <-plan.tripped:
			case <-time.After(time.Minute):
				t.Fatalf("no crash at %q; requests: %+v", tc.crashAt, e.sim.Requests())
			}
			before := e.counts()
			e.sim.ResetRequests()

			e.startCaddy(cfg) // a fresh Caddy, the same storage
			e.waitForCertificate(name, nil, time.Minute)
			e.checkEndState(t, []string{name}, nil, nil)
			after := e.counts()
			t.Logf("requests before the crash %v, after %v", before, after)
			if tc.resumed && after[sslcitest.OpRequest] != 0 {
				t.Errorf("the fresh Caddy requested %d new verifications instead of resuming the order", after[sslcitest.OpRequest])
			}
		})
	}
}

// A certificate our checks refuse is ours and never stored: it is deleted
// at SSLCI, whether its leaf parsed (matched by names and end_time) or not
// (matched as a lost answer).
func TestRefusedCertificateDeleted(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(nil)
	for _, fault := range []sslcitest.Fault{sslcitest.FaultWrongNames, sslcitest.FaultWrongKey, sslcitest.FaultBrokenPEM, sslcitest.FaultExpired} {
		t.Run(string(fault), func(t *testing.T) {
			e.sim.InjectFault(sslcitest.OpFinalize, fault, 1)
			csr, _ := sslcitest.NewCSR(t, "refused.test")
			if _, err := iss.Issue(context.Background(), csr); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("Issue = %v, want the certificate refused", err)
			}
			if !e.faultSeen(sslcitest.OpFinalize, fault) {
				t.Fatal("the fault was not applied")
			}
			if certs := e.sim.Certificates(e.sim.Token()); len(certs) != 0 {
				t.Errorf("refused certificates left at SSLCI: %+v", certs)
			}
			e.checkNothingLeft(t)
		})
	}
}

// Orders and certificates another client of the same account made are
// never cancelled nor deleted, for the same domain neither, even when
// this Caddy lost answers at the same time; what cannot be told apart is
// left alone until it can (here: once the other client is done, the
// sweep of a restarted Caddy settles what was ours).
func TestOwnershipOtherClient(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	ctx := context.Background()
	other, err := api.New(e.sim.URL(), e.sim.Token())
	if err != nil {
		t.Fatal(err)
	}
	request := func(domain string) int64 {
		v, err := other.RequestVerification(ctx, domain, api.MethodHTTP)
		if err != nil {
			t.Fatal(err)
		}
		return v.OrderID
	}
	// Before this Caddy's first request: one for the same domain.
	otherOrders := []int64{request("own.test"), request("elsewhere.test")}

	iss := e.startIssuer(nil)
	issue := func() *x509.Certificate {
		t.Helper()
		e.sim.InjectFault(sslcitest.OpRequest, sslcitest.FaultLostAfter, 1)
		e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultCutAfter, 1)
		csr, _ := sslcitest.NewCSR(t, "own.test")
		cert, err := iss.Issue(ctx, csr)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		e.keep(cert, "own.test")
		return e.parseChain(cert.Certificate, "own.test")
	}
	first := issue()

	// After it: the other client finalizes the same name (the account has
	// it verified) and requests it again; then this Caddy verifies and
	// finalizes again, losing both answers: two candidates for each lost
	// answer, none provably ours, all left alone.
	if _, err := other.Finalize(ctx, []string{"own.test"}, nil); err != nil {
		t.Fatal(err)
	}
	certs := e.sim.Certificates(e.sim.Token())
	otherCert := certs[len(certs)-1].ID
	otherOrders = append(otherOrders, request("own.test"))
	e.sim.ExpireVerifications()
	dirs, _ := filepath.Glob(filepath.Join(e.storageDir, "sslci", "*", "*", "verifications"))
	for _, d := range dirs {
		os.RemoveAll(d)
	}
	// Two certificates for the same names expiring in the same second
	// cannot be told apart (and are left alone): keep this one's later.
	e.sim.Advance(2 * time.Second)
	issue()

	pending := e.sim.PendingOrders(e.sim.Token())
	for _, id := range otherOrders {
		if !slices.ContainsFunc(pending, func(o sslcitest.Order) bool { return o.ID == id }) {
			t.Errorf("the other client's order %d was cancelled", id)
		}
	}
	if !slices.ContainsFunc(e.sim.Certificates(e.sim.Token()), func(c sslcitest.Certificate) bool { return c.ID == otherCert }) {
		t.Errorf("the other client's certificate %d was deleted", otherCert)
	}
	if len(pending) != len(otherOrders)+1 {
		t.Errorf("pending orders %+v: want the other client's and this Caddy's unprovable one", pending)
	}

	// The other client finishes; a restarted Caddy's sweep settles ours.
	if err := other.Delete(ctx, api.RecordOrder, otherOrders[2]); err != nil {
		t.Fatal(err)
	}
	if err := other.Delete(ctx, api.RecordCertificate, otherCert); err != nil {
		t.Fatal(err)
	}
	otherOrders = otherOrders[:2]
	defer sslci.SetSweepDelay(0)()
	e.restartIssuer(nil)
	var superseded []int64 // the first certificate: stored once, replaced, kept as history
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		if c.EndTime.Equal(first.NotAfter) {
			superseded = append(superseded, c.ID)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(e.sim.PendingOrders(e.sim.Token())) > len(otherOrders) || len(e.sim.Certificates(e.sim.Token())) > 2 {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.checkEndState(t, []string{"own.test"}, otherOrders, superseded)
}
