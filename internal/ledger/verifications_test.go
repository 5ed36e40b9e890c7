package ledger

import (
	"slices"
	"testing"
	"time"
)

// A verification is worth storing when the certificate made with it renews
// within the 28 days it is reused: certmagic's rule (RenewAt) under the
// policy's ratio, a certificate already due renewing at once.
func TestVerificationWorthStoring(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	v := Verification{Domain: "a.test", OrderID: 1, VerifiedAt: now}
	day := 24 * time.Hour
	for _, c := range []struct {
		lifetime time.Duration
		ratio    float64
		want     bool
	}{
		{90 * day, 0, false},           // renews at day 60
		{90 * day, 0.8, true},          // day 18
		{90 * day, 0.68, false},        // day 28.8: just past the 28 days
		{41 * day, 0, true},            // day 27.3: lifetimes under 42 days
		{43 * day, 0, false},           // day 28.7
		{time.Hour, 0.99, true},        // due at once
		{30 * time.Second, 0.28, true}, // the renewal tests' certificates
	} {
		leaf := Leaf{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(c.lifetime - time.Minute)}
		if got := v.WorthStoring(leaf, c.ratio); got != c.want {
			t.Errorf("lifetime %v, ratio %v: WorthStoring = %v, want %v (renews at %v)", c.lifetime, c.ratio, got, c.want, leaf.RenewAt(c.ratio))
		}
	}
}

// The README's renewal sequences ("Renewal timing"), with the real reuse
// window: renewals every lifetime × (1 − ratio) reuse the verification (1
// request for a one-name certificate) while it is younger than
// ReuseWindow, and verify again (3 requests) otherwise, which restarts it.
func TestRenewalSequencesAsDocumented(t *testing.T) {
	day := 24 * time.Hour
	costs := func(lifetime time.Duration, ratio float64, renewals int) []int {
		start := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
		v := Verification{Domain: "a.test", VerifiedAt: start}
		every := time.Duration(float64(lifetime) * (1 - ratio))
		var out []int
		for k := 1; k <= renewals; k++ {
			at := start.Add(time.Duration(k) * every)
			if v.ReusableAt(at) {
				out = append(out, 1)
			} else {
				out = append(out, 3)
				v.VerifiedAt = at
			}
		}
		return out
	}
	for _, c := range []struct {
		what     string
		lifetime time.Duration
		ratio    float64
		want     []int
	}{
		{"90-day certificates verify again at every renewal", 90 * day, 1.0 / 3, []int{3, 3, 3}},
		{"30-day certificates alternate 1 and 3", 30 * day, 1.0 / 3, []int{1, 3, 1, 3, 1, 3}},
		{"10-day ones cost 1 four times in five", 10 * day, 1.0 / 3, []int{1, 1, 1, 1, 3, 1, 1, 1, 1, 3}},
		{"90-day ones at 0.7: alternately 1 and 3, every 27 days", 90 * day, 0.7, []int{1, 3, 1, 3}},
	} {
		if got := costs(c.lifetime, c.ratio, len(c.want)); !slices.Equal(got, c.want) {
			t.Errorf("%s: requests per renewal %v, want %v", c.what, got, c.want)
		}
	}
}
