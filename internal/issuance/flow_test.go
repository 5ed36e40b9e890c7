package issuance

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/ledger"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// One issuance, request by request: a fresh name costs the id floor's list
// (once per account and storage), a request, a confirm and a finalize; a
// renewal inside the reuse window costs the finalize alone (the first
// certificate is seen in storage: nothing to reconcile), and the metadata
// says which verification it reused.
func TestIssueFlow(t *testing.T) {
	e := newEnv(t, sslcitest.Options{SignCSR: true})
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

// heldWrites holds each write of a key containing match until release is
// closed, or 5 s have passed (then timedOut is set), then writes it.
type heldWrites struct {
	*certmagic.FileStorage
	match    string
	release  chan struct{}
	timedOut *atomic.Bool
}

func (s heldWrites) Store(ctx context.Context, key string, value []byte) error {
	if strings.Contains(key, s.match) {
		select {
		case <-s.release:
		case <-time.After(5 * time.Second):
			s.timedOut.Store(true)
		}
	}
	return s.FileStorage.Store(ctx, key, value)
}

// The record of a confirmed verification is written while the finalize
// runs, not before it: on a disk that syncs every write, that is one sync
// less between the request and the certificate. Its write is held until
// SSLCI has seen the finalize: written before it, the hold could only end
// by its timeout. Issue still returns with the record written.
func TestVerificationRecordWrittenWhileFinalizing(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	l := e.iss.Ledger
	held := heldWrites{FileStorage: l.Storage().(*certmagic.FileStorage), match: "/verifications/",
		release: make(chan struct{}), timedOut: new(atomic.Bool)}
	l.SetStorage(held)
	go func() {
		for e.requests()[sslcitest.OpFinalize] == 0 {
			time.Sleep(time.Millisecond)
		}
		close(held.release)
	}()
	if _, err := e.issue("meanwhile.test"); err != nil {
		t.Fatal(err)
	}
	if held.timedOut.Load() {
		t.Error("the verification record was written before the finalize was sent")
	}
	if rec, err := l.Verification(context.Background(), "meanwhile.test"); err != nil || rec == nil {
		t.Errorf("after Issue returned, the verification record is %v (%v): Issue must wait for its write", rec, err)
	}
}
