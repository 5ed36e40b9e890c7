package ledger

import (
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
