package ledger

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/api"
)

// replacedBy picks only superseded certificates with exactly the renewed
// names, and none alike to the second to another listed certificate
// (one made by another client in the same second), whatever its mark.
func TestReplacedBy(t *testing.T) {
	cert := func(id int64, end int64, mark string, names ...string) ListedCertificate {
		return ListedCertificate{ID: id, Domains: names, EndTime: end, Mark: mark}
	}
	l := &Marked{Certificates: []ListedCertificate{
		cert(1, 100, MarkSuperseded, "a.test"),
		cert(2, 200, MarkSuperseded, "A.test."), // spelled otherwise
		cert(3, 300, MarkSuperseded, "a.test"),  // alike to 4
		cert(4, 300, MarkForeign, "a.test"),
		cert(5, 400, MarkSuperseded, "a.test", "b.test"),
		cert(6, 500, MarkServed, "a.test"),
		cert(7, 600, MarkRefused, "a.test"),
		cert(8, 700, MarkSuperseded, "b.test"),
	}, PendingOrders: []ListedOrder{{ID: 9, Domains: []string{"a.test"}, Mark: MarkUnused}}}
	var got []int64
	for _, r := range replacedBy(l, []string{"a.test"}) {
		got = append(got, r.ID)
	}
	if !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("replacedBy picked %v, want [1 2]", got)
	}
}

// lockHook is the test storage with a hook on each Lock.
type lockHook struct {
	*faultyStorage
	onLock func(name string)
}

func (s *lockHook) Lock(ctx context.Context, name string) error {
	if f := s.onLock; f != nil {
		f(name)
	}
	return s.faultyStorage.Lock(ctx, name)
}

// What the listing under the locks shows as removable of a name prune did
// not lock is left alone: here b.test's renewal, holding b.test's lock,
// stores its new certificate while prune waits for a.test's, so that the
// served one looks superseded; the renewal could still roll back to it.
func TestPruneLeavesWhatItDidNotLock(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	unused, _ := e.finalize("a.test")
	unused.SentAt = time.Now().Add(-time.Hour)
	if err := e.ledger.Put(ctx, unused.Key, unused); err != nil {
		t.Fatal(err)
	}
	served := e.obtain(true, "b.test")
	// seen stored, as the renewal's start marks it (history)
	_, certs, err := e.ledger.Records(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range certs {
		if slices.Equal(r.Names, []string{"b.test"}) {
			r.State = StateStored
			if err := e.ledger.Put(ctx, r.Key, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.sim.Advance(time.Minute)
	_, renewedPEM := e.finalize("b.test")

	hook := &lockHook{faultyStorage: e.storage}
	hook.onLock = func(name string) {
		if name == IssueLock("a.test") {
			hook.onLock = nil
			if err := e.storage.Lock(ctx, IssueLock("b.test")); err != nil {
				t.Error(err)
			}
			e.store([]string{"b.test"}, renewedPEM)
		}
	}
	e.ledger.SetStorage(hook)
	removals, err := e.ledger.Prune(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	var sawServed bool
	for _, r := range removals {
		if r.Type == api.RecordCertificate && slices.Equal(r.Domains, []string{"b.test"}) {
			sawServed = true
			if r.Done || !strings.Contains(r.Skipped, "b.test's lock was not") {
				t.Errorf("b.test's certificate: %+v; want it left alone, its lock not taken", r)
			}
		}
	}
	if !sawServed {
		t.Errorf("removals %+v: the superseded b.test certificate is not among them", removals)
	}
	var ends []int64
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		if slices.Equal(c.Domains, []string{"b.test"}) {
			ends = append(ends, c.EndTime.Unix())
		}
	}
	if !slices.Contains(ends, served.NotAfter.Unix()) {
		t.Errorf("the certificate b.test served was deleted at SSLCI (left: %v)", ends)
	}
}
