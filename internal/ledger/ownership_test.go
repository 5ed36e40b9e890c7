package ledger

import (
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/api"
)

// The ownership rule, case by case, on a list as SSLCI gives it.
func TestClassify(t *testing.T) {
	now := time.Now()
	sent := now.Add(-time.Minute)
	notAfter := now.Add(90 * 24 * time.Hour).Truncate(time.Second)
	list := &api.List{
		PendingOrders: []api.OrderInfo{
			{ID: 10, Domains: []string{"a.test"}}, // another client's, before our floor
			{ID: 21, Domains: []string{"a.test"}}, // recorded by id
			{ID: 22, Domains: []string{"b.test"}}, // made by our lost request
			{ID: 23, Domains: []string{"c.test"}}, // two for one lost request: unprovable
			{ID: 24, Domains: []string{"c.test"}},
			{ID: 25, Domains: []string{"d.test"}}, // a request in flight: left alone
		},
		Certificates: []api.CertificateInfo{
			{ID: 1, Domains: []string{"a.test"}, Added: sent, Expires: notAfter},                  // stored
			{ID: 2, Domains: []string{"b.test"}, Added: sent, Expires: notAfter.Add(time.Second)}, // refused by us
			{ID: 3, Domains: []string{"e.test"}, Added: sent, Expires: notAfter},                  // our lost finalize
			{ID: 4, Domains: []string{"e.test"}, Added: sent.Add(-time.Hour), Expires: notAfter},  // older: another client's
			{ID: 5, Domains: []string{"f.test", "g.test"}, Added: sent, Expires: notAfter},        // not ours at all
		},
	}
	orders := []OrderRecord{
		{Domain: "a.test", Floor: 20, State: StatePending, OrderID: 21, Key: "o1"},
		{Domain: "b.test", Floor: 20, State: StateSent, Key: "o2"},
		{Domain: "c.test", Floor: 20, State: StateSent, Key: "o3"},
		{Domain: "d.test", Floor: 20, State: StateSent, Key: "live"},
	}
	certs := []CertRecord{
		{Names: []string{"a.test"}, State: StateStored, NotAfter: notAfter, Key: "c1"},
		{Names: []string{"b.test"}, State: StateRefused, NotAfter: notAfter.Add(time.Second), Key: "c2"},
		{Names: []string{"e.test"}, State: StateSent, SentAt: sent, Key: "c3"},
	}
	stored := []Leaf{{Names: []string{"a.test"}, NotAfter: notAfter}}
	o := classify(list, orders, certs, stored, func(k string) bool { return k == "live" }, now)

	wantOrders := map[int64]owner{10: ownerUnknown, 21: ownerRecorded, 22: ownerLost, 23: ownerUnknown, 24: ownerUnknown, 25: ownerUnknown}
	for id, want := range wantOrders {
		if got := o.Orders[id]; got != want {
			t.Errorf("order %d: %s, want %s", id, got, want)
		}
	}
	wantCerts := map[int64]owner{1: ownerStored, 2: ownerUnstored, 3: ownerLost, 4: ownerUnknown, 5: ownerUnknown}
	for id, want := range wantCerts {
		if got := o.Certs[id]; got != want {
			t.Errorf("certificate %d: %s, want %s", id, got, want)
		}
	}
	acted := map[int64]bool{}
	for _, g := range o.groups {
		for _, id := range g.ids {
			acted[id] = true
		}
	}
	for _, id := range []int64{10, 23, 24, 25, 1, 4, 5} {
		if acted[id] {
			t.Errorf("%d would be cancelled or deleted", id)
		}
	}
	if len(o.ambiguous) != 2 {
		t.Errorf("ambiguous = %v, want orders 23 and 24", o.ambiguous)
	}
}

// A stored certificate's history record matches one listed certificate by
// names and expiry: when another client made one alike to the second,
// neither is marked superseded (prune and delete_replaced would delete it).
func TestClassifyHistoryTwins(t *testing.T) {
	notAfter := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	list := &api.List{Certificates: []api.CertificateInfo{
		{ID: 1, Domains: []string{"a.test"}, Expires: notAfter},
		{ID: 2, Domains: []string{"a.test"}, Expires: notAfter}, // another client's, same second
		{ID: 3, Domains: []string{"b.test"}, Expires: notAfter},
	}}
	certs := []CertRecord{
		{Names: []string{"a.test"}, State: StateStored, NotAfter: notAfter, Key: "a"},
		{Names: []string{"b.test"}, State: StateStored, NotAfter: notAfter, Key: "b"},
	}
	o := classify(list, nil, certs, nil, func(string) bool { return false }, time.Now())
	for id, want := range map[int64]owner{1: ownerUnknown, 2: ownerUnknown, 3: ownerHistory} {
		if got := o.Certs[id]; got != want {
			t.Errorf("certificate %d: %s, want %s", id, got, want)
		}
	}
}
