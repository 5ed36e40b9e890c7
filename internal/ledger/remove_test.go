package ledger

import (
	"slices"
	"testing"
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
