package issuance

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/ledger"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// One issuance, request by request: a fresh name costs the id floor's list
// (once per account and storage), a request, a confirm and a finalize; a
// renewal inside the reuse window (30-day certificates renew at day 20)
// costs the finalize alone (the first certificate is seen in storage:
// nothing to reconcile), and the metadata says which verification it
// reused.
func TestIssueFlow(t *testing.T) {
	e := newEnv(t, sslcitest.Options{SignCSR: true, Validity: 30 * 24 * time.Hour})
	issued, err := e.issue("flow.test", "www.flow.test")
	if err != nil {
		t.Fatal(err)
	}
	want := map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 2, sslcitest.OpConfirm: 2, sslcitest.OpFinalize: 1}
	if got := e.requests(); !maps.Equal(got, want) {
		t.Errorf("first issuance: requests %v, want %v", got, want)
	}
	leaf, err := ledger.ParseLeaf(issued.Certificate)
	if err != nil || !slices.Equal(leaf.DNSNames, []string{"flow.test", "www.flow.test"}) {
		t.Fatalf("issued %v, %v", leaf, err)
	}
	e.store(issued, "flow.test", "www.flow.test")
	meta := issued.Metadata.(Metadata)
	if meta.KeySource != "csr" || len(meta.OrderIDs) != 2 || meta.Reused != nil {
		t.Errorf("metadata %+v", meta)
	}

	e.sim.ResetRequests()
	renewed, err := e.issue("flow.test", "www.flow.test")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.requests(); !maps.Equal(got, map[sslcitest.Op]int{sslcitest.OpFinalize: 1}) {
		t.Errorf("renewal: requests %v, want one finalize", got)
	}
	if m := renewed.Metadata.(Metadata); !slices.Equal(m.Reused, []string{"flow.test", "www.flow.test"}) || !maps.Equal(m.OrderIDs, meta.OrderIDs) {
		t.Errorf("renewal metadata %+v, want the first issuance's orders reused", m)
	}
	if got := e.counted; got["verification reused"] != 2 || got["verification confirmed"] != 2 || got["obtained csr"] != 2 {
		t.Errorf("metrics %v", got)
	}
}

// A pending order that a Caddy which stopped left, recorded with its
// challenge, is resumed by the next issuance of its name: no new request.
func TestIssueResumesRecordedOrder(t *testing.T) {
	e := newEnv(t, sslcitest.Options{SignCSR: true})
	ctx := context.Background()
	l := e.iss.Ledger
	if err := l.EnsureFloor(ctx); err != nil {
		t.Fatal(err)
	}
	rec := l.NewOrderRecord("resume.test", api.MethodDNS)
	v, err := e.iss.Client.RequestVerification(ctx, "resume.test", api.MethodDNS)
	if err != nil {
		t.Fatal(err)
	}
	rec.Answered(v)
	if err := l.Put(ctx, rec.Key, rec); err != nil {
		t.Fatal(err)
	}
	e.sim.ResetRequests()
	issued, err := e.issue("resume.test")
	if err != nil {
		t.Fatal(err)
	}
	want := map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1}
	if got := e.requests(); !maps.Equal(got, want) {
		t.Errorf("requests %v, want %v (the list that finds the order, no request)", got, want)
	}
	if id := issued.Metadata.(Metadata).OrderIDs["resume.test"]; id != v.OrderID {
		t.Errorf("the certificate names order %d, want the resumed %d", id, v.OrderID)
	}
	if n := len(e.sim.PendingOrders(e.sim.Token())); n != 0 {
		t.Errorf("%d orders left pending", n)
	}
}

// A certificate the checks refuse is deleted at SSLCI (it is ours and will
// never be stored), and Issue says why, with the hint.
func TestIssueRefusesAndDeletes(t *testing.T) {
	e := newEnv(t, sslcitest.Options{SignCSR: true})
	e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultWrongNames, 1)
	_, err := e.issue("refused.test")
	if err == nil {
		t.Fatal("Issue accepted a certificate for other names")
	}
	if n := len(e.sim.Certificates(e.sim.Token())); n != 0 {
		t.Errorf("%d certificates left at SSLCI, want the refused one deleted", n)
	}
	if e.counted["refused unknown"] != 1 {
		t.Errorf("metrics %v, want one refused", e.counted)
	}
	t.Log(err)
}

// A verification's record is stored only where an issuance may read it.
// A 90-day certificate under the default ratio renews at day 60, past the
// 28 days of reuse: nothing is stored (one synced write less per name),
// and an issuance of the name soon after verifies it again. Under
// renewal_window_ratio 0.8 the renewal (day 18) reuses it: stored, before
// Issue returns, and reused. An issuance that ends in no certificate
// stores what it verified, for certmagic's next try.
func TestVerificationStoredOnlyForReuse(t *testing.T) {
	ctx := context.Background()
	stored := func(e *env, name string) *ledger.Verification {
		t.Helper()
		v, err := e.iss.Ledger.Verification(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	verifiedAgain := map[sslcitest.Op]int{sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1}
	reused := map[sslcitest.Op]int{sslcitest.OpFinalize: 1}
	issueTwice := func(e *env, name string, second map[sslcitest.Op]int) {
		t.Helper()
		for i := range 2 {
			e.sim.ResetRequests()
			issued, err := e.issue(name)
			if err != nil {
				t.Fatal(err)
			}
			e.store(issued, name) // as certmagic does: nothing to reconcile
			if i == 0 {
				continue
			}
			if got := e.requests(); !maps.Equal(got, second) {
				t.Errorf("%s issued again: requests %v, want %v", name, got, second)
			}
		}
	}

	e := newEnv(t, sslcitest.Options{SignCSR: true})
	issueTwice(e, "day60.test", verifiedAgain)
	if v := stored(e, "day60.test"); v != nil {
		t.Errorf("a 90-day certificate renewing at day 60 stored its verification %+v", v)
	}

	e.iss.RenewalRatio = 0.8
	before := time.Now().UTC()
	issueTwice(e, "day18.test", reused)
	if v := stored(e, "day18.test"); v == nil || v.OrderID == 0 || v.VerifiedAt.Before(before.Add(-time.Second)) || v.VerifiedAt.After(time.Now()) {
		t.Errorf("a certificate renewing at day 18: its verification record is %+v, want one made now", v)
	}

	e.iss.RenewalRatio = 0
	e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultWrongNames, 1)
	if _, err := e.issue("failed.test"); err == nil {
		t.Fatal("Issue accepted a certificate for other names")
	}
	if v := stored(e, "failed.test"); v == nil {
		t.Error("an issuance that ended in no certificate did not store the verification it made")
	}
}
