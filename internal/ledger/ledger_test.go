package ledger

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// Every key the issuer uses, as the README documents them; certmagic's
// own as certmagic builds them.
func TestKeys(t *testing.T) {
	k := Keys{IssuerKey: "sslci-127.0.0.1-8080-api", Account: "0123abcd"}
	for got, want := range map[string]string{
		k.LedgerDir():                      "sslci/sslci-127.0.0.1-8080-api/0123abcd/ledger",
		k.Floor():                          "sslci/sslci-127.0.0.1-8080-api/0123abcd/ledger/floor.json",
		k.recordsDir(kindOrders, "A.test"): "sslci/sslci-127.0.0.1-8080-api/0123abcd/ledger/orders/a.test",
		k.Verification("*.b.test"):         "sslci/sslci-127.0.0.1-8080-api/0123abcd/verifications/wildcard_.b.test.json",
		k.KeptKey("*.f.test", [32]byte{1}, time.Unix(1800000000, 0)): "sslci/sslci-127.0.0.1-8080-api/keys/wildcard_.f.test/0100000000000000000000000000000000000000000000000000000000000000-1800000000.pem",
		k.Challenge("c.test"):              "acme/sslci-127.0.0.1-8080-api/challenge_tokens/c.test.json",
		k.SiteCert("d.test"):               certmagic.StorageKeys.SiteCert(k.IssuerKey, "d.test"),
		IssueLock("*.e.test"):              "issue_cert_*.e.test",
		IssueLockOfDir("wildcard_.e.test"): "issue_cert_*.e.test",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	long := []string{strings.Repeat("a", 600) + ".test", strings.Repeat("b", 600) + ".test"}
	if got, want := NamesKey(long), (&certmagic.CertificateResource{SANs: long}).NamesKey(); got != want || len(got) > 1024 {
		t.Errorf("NamesKey = %q (%d bytes), want certmagic's %q", got, len(got), want)
	}
	if name, ok := k.Site(k.SiteKey("d.test"), Keys.SiteKey); !ok || name != "d.test" {
		t.Errorf("Site(SiteKey) = %q, %v", name, ok)
	}
	if _, ok := k.Site(k.SiteCert("d.test"), Keys.SiteKey); ok {
		t.Error("Site takes a certificate for a key")
	}
	// Remembered keys are certmagic's, asked twice or for other issuers.
	for range 2 {
		for _, ik := range []string{k.IssuerKey, "sslci-Other:443/API"} {
			k := Keys{IssuerKey: ik}
			for _, n := range []string{"d.test", "*.W.test", "a.test,b.test", "x+y.test"} {
				if k.SiteKey(n) != certmagic.StorageKeys.SitePrivateKey(ik, n) || k.SiteCert(n) != certmagic.StorageKeys.SiteCert(ik, n) ||
					k.SiteMeta(n) != certmagic.StorageKeys.SiteMeta(ik, n) || k.CertsDir() != certmagic.StorageKeys.CertsPrefix(ik) {
					t.Errorf("%s, %s: the keys are not certmagic's", ik, n)
				}
			}
		}
	}
}

// A listing of a ledger folder that concurrent writes cut short (certmagic's
// FileStorage fails a walk with fs.ErrNotExist when an entry goes away) is
// not an empty folder: after a lost verification request, the
// reconciliation still finds its record and cancels the order it made.
// Cut short too often, it is an error, and nothing is cancelled.
func TestListingCutShort(t *testing.T) {
	for _, tc := range []struct {
		cuts      int
		cancelled bool
	}{{listCutAttempts - 1, true}, {listCutAttempts, false}} {
		e := newEnv(t)
		ctx := context.Background()
		if err := e.ledger.EnsureFloor(ctx); err != nil {
			t.Fatal(err)
		}
		rec := e.ledger.NewOrderRecord("cut.test", api.MethodDNS)
		if err := e.ledger.Put(ctx, rec.Key, rec); err != nil {
			t.Fatal(err)
		}
		e.sim.InjectFault(sslcitest.OpRequest, sslcitest.FaultLostAfter, 1)
		if _, err := e.ledger.Client.RequestVerification(ctx, "cut.test", api.MethodDNS); err == nil {
			t.Fatal("the answer was not lost")
		}
		e.storage.failing(cutShort(e.ledger.Keys.recordsDir(kindOrders, "cut.test"), tc.cuts))
		_, err := e.ledger.Reconcile(ctx, OrderOf("cut.test"), nil, api.MethodDNS)
		if n := e.storage.failures(); n != tc.cuts {
			t.Errorf("%d listings cut short, want %d", n, tc.cuts)
		}
		pending := len(e.sim.PendingOrders(e.sim.Token()))
		if tc.cancelled && (err != nil || pending != 0) {
			t.Errorf("cut %d times: %v, %d orders pending; want the lost one cancelled", tc.cuts, err, pending)
		}
		if !tc.cancelled && (err == nil || pending != 1) {
			t.Errorf("cut %d times: %v, %d orders pending; want an error and nothing cancelled", tc.cuts, err, pending)
		}
	}
}

// "A 400 means gone" holds for SSLCI's own 400 only: a record it does not
// have (a retried DELETE whose first answer was lost) is what was asked;
// a failure that is not SSLCI's answer about the record proves nothing.
func TestDeleteGoneOnlyOnA400(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.ledger.Delete(ctx, api.RecordCertificate, 4242); err != nil {
		t.Errorf("deleting a record SSLCI does not have: %v; want gone, no error", err)
	}
	for _, fault := range []sslcitest.Fault{sslcitest.FaultServerError, sslcitest.FaultHTML, sslcitest.FaultDrop, sslcitest.FaultMalformedJSON} {
		e.sim.InjectFault(sslcitest.OpDelete, fault, 1)
		if err := e.ledger.Delete(ctx, api.RecordCertificate, 4242); err == nil {
			t.Errorf("%s: Delete said gone", fault)
		}
	}
}
