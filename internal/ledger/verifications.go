package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// This file is the record of each name SSLCI confirmed (per endpoint and
// account: Keys.Verification), and the one rule that says whether an
// issuance reuses it instead of verifying the name again: the issuance
// skips verifying by it, `caddy sslci status` says by it what the next
// renewal will do. Every Caddy sharing the storage shares the records.
//
// A record is written only where an issuance may read it: when the
// renewal of the certificate it was made for reuses it (WorthStoring), or
// when the issuance did not end in a certificate (certmagic tries again).
// A 90-day certificate renews at day 60, after SSLCI's 29 days: its
// renewal verifies every name again whatever is stored, and a record
// would be one more synced write per name for nobody. (Caddy gives each
// name a certificate of its own, so no other certificate would read it;
// a forced renewal within the 28 days verifies again.)

// SSLCI lets finalize use a domain verified within the last 29 days
// (sslci-api.md). The issuer reuses a verification for a day less, so
// that one never expires between our check and SSLCI's.
const (
	VerificationWindow = 29 * 24 * time.Hour
	reuseMargin        = 24 * time.Hour
	// ReuseWindow is how long after SSLCI confirmed a name an issuance
	// reuses that verification: 28 days.
	ReuseWindow = VerificationWindow - reuseMargin
)

// Verification is the record of a name's last confirmed verification.
type Verification struct {
	Domain     string    `json:"domain"`
	OrderID    int64     `json:"order_id"`
	VerifiedAt time.Time `json:"verified_at"`
}

// ReusableAt says whether an issuance at t reuses this verification
// rather than verifying the name again.
func (v Verification) ReusableAt(t time.Time) bool {
	age := t.Sub(v.VerifiedAt)
	return age >= 0 && age < ReuseWindow
}

// ReusableUntil is when an issuance stops reusing it.
func (v Verification) ReusableUntil() time.Time { return v.VerifiedAt.Add(ReuseWindow) }

// WorthStoring says whether v is worth a record for the certificate leaf,
// issued with it: leaf's renewal under the policy's renewal_window_ratio
// (0: certmagic's default) reuses it. A certificate due at once renews
// at once.
func (v Verification) WorthStoring(leaf Leaf, ratio float64) bool {
	at := leaf.RenewAt(ratio)
	if at.Before(v.VerifiedAt) {
		at = v.VerifiedAt
	}
	return v.ReusableAt(at)
}

// ErrCorrupt is the error of a record that does not parse.
var ErrCorrupt = errors.New("corrupt record")

// Verification reads the record of name: nil if there is none; an error
// if storage cannot say, or (ErrCorrupt) the record does not parse. Either
// costs the issuance only a verification.
func (l *Ledger) Verification(ctx context.Context, name string) (*Verification, error) {
	var v Verification
	if found, err := l.loadJSON(ctx, l.Keys.Verification(name), "the verification record of "+name, &v); !found {
		return nil, err
	}
	v.Domain = name
	return &v, nil
}

// loadJSON reads the JSON stored at key into v: false if there is none;
// an error if storage cannot say (unknown, not absent), or, wrapping
// ErrCorrupt, if it does not parse. what names it in the errors.
func (l *Ledger) loadJSON(ctx context.Context, key, what string, v any) (found bool, err error) {
	data, err := l.Storage().Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", what, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("%s: %w: %v", what, ErrCorrupt, err)
	}
	return true, nil
}

// StoreVerification writes the record of v, for every Caddy sharing the
// storage.
func (l *Ledger) StoreVerification(ctx context.Context, v Verification) error {
	data, err := json.Marshal(Verification{Domain: v.Domain, OrderID: v.OrderID, VerifiedAt: v.VerifiedAt.UTC()})
	if err != nil {
		return err
	}
	return l.Storage().Store(ctx, l.Keys.Verification(v.Domain), data)
}

// ForgetVerification deletes the record of name.
func (l *Ledger) ForgetVerification(ctx context.Context, name string) error {
	if err := l.Storage().Delete(ctx, l.Keys.Verification(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
