package ledger

import (
	"slices"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/api"
)

// The marks of `caddy sslci list`, case by case, from the issuer's own
// ownership rule over a list, the ledger's records and the leaves in
// storage; and the records a removal resolves.
func TestCommandMarks(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	old, recent := now.Add(-time.Hour), now.Add(-time.Minute)
	end := now.Add(90 * 24 * time.Hour)
	earlier := end.Add(-30 * 24 * time.Hour)
	cert := func(id int64, name string, expires time.Time) api.CertificateInfo {
		return api.CertificateInfo{ID: id, Domains: []string{name}, Added: old, Expires: expires}
	}
	list := &api.List{
		Certificates: []api.CertificateInfo{
			cert(1, "a.test", earlier),            // stored once, replaced by 2
			cert(2, "a.test", end),                // in storage
			cert(3, "b.test", end),                // refused by the checks
			cert(4, "c.test", end),                // obtained, never stored
			cert(5, "d.test", end),                // obtained a minute ago
			cert(6, "e.test", end),                // another client's
			cert(7, "a.test", end.Add(time.Hour)), // another client's, same names
		},
		PendingOrders: []api.OrderInfo{
			{ID: 1001, Domains: []string{"a.test"}, Status: "pending"}, // ours, left behind
			{ID: 1002, Domains: []string{"b.test"}, Status: "pending"}, // ours, a minute ago
			{ID: 1003, Domains: []string{"f.test"}, Status: "pending"}, // another client's
		},
	}
	orders := []OrderRecord{
		{Domain: "a.test", SentAt: old, State: StatePending, OrderID: 1001, Key: "o1"},
		{Domain: "b.test", SentAt: recent, State: StatePending, OrderID: 1002, Key: "o2"},
	}
	certs := []CertRecord{
		{Names: []string{"a.test"}, SentAt: old, State: StateStored, NotAfter: earlier, Key: "c1"},
		{Names: []string{"a.test"}, SentAt: old, State: StateObtained, NotAfter: end, Key: "c2"},
		{Names: []string{"b.test"}, SentAt: old, State: StateRefused, NotAfter: end, Key: "c3"},
		{Names: []string{"c.test"}, SentAt: old, State: StateObtained, NotAfter: end, Key: "c4"},
		{Names: []string{"d.test"}, SentAt: recent, State: StateObtained, NotAfter: end, Key: "c5"},
	}
	leaves := []Leaf{{Key: "certificates/x/a.test/a.test.crt", Names: []string{"a.test"}, NotAfter: end}}
	m := mark(list, orders, certs, leaves, now)

	wantCerts := map[int64][2]string{
		1: {MarkSuperseded, "by 2"}, // the one served
		2: {MarkServed, "certificates/x/a.test/a.test.crt"},
		3: {MarkRefused, ""},
		4: {MarkUnused, ""},
		5: {MarkInProgress, ""},
		6: {MarkForeign, ""},
		7: {MarkForeign, ""},
	}
	for _, c := range m.Certificates {
		if got := [2]string{c.Mark, c.Note}; got != wantCerts[c.ID] {
			t.Errorf("certificate %d: %q, want %q", c.ID, got, wantCerts[c.ID])
		}
	}
	wantOrders := map[int64]string{1001: MarkUnused, 1002: MarkInProgress, 1003: MarkForeign}
	for _, o := range m.PendingOrders {
		if got := o.Mark; got != wantOrders[o.ID] {
			t.Errorf("order %d: %q, want %q", o.ID, got, wantOrders[o.ID])
		}
	}

	got := m.view.resolved(map[string]bool{objectKey(api.RecordCertificate, 3): true, objectKey(api.RecordOrder, 1001): true, objectKey(api.RecordCertificate, 1): true})
	slices.Sort(got)
	if want := []string{"c3", "o1"}; !slices.Equal(got, want) {
		t.Errorf("records resolved = %v, want %v", got, want)
	}
}
