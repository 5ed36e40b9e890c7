package issuance

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"time"

	"go.uber.org/zap"
)

// This file keeps a record of each name SSLCI confirmed, in the storage of
// the automation policy (per endpoint and account: ledger.Keys), so
// that every Caddy sharing the storage skips verifying it again while
// SSLCI still accepts the verification. A missing or unreadable record only
// costs a verification.

// SSLCI accepts a verification for finalize for 29 days. We reuse one for
// a day less, so a verification never expires between our check and the
// provider's.
const (
	verificationWindow = 29 * 24 * time.Hour
	reuseMargin        = 24 * time.Hour
)

// verificationRecord is kept in storage for each name SSLCI confirmed.
type verificationRecord struct {
	Domain     string    `json:"domain"`
	OrderID    int64     `json:"order_id"`
	VerifiedAt time.Time `json:"verified_at"`
}

// recentVerification returns the record of name if SSLCI confirmed it
// recently enough for finalize to use it.
func (iss *Issuer) recentVerification(ctx context.Context, name string) (verificationRecord, bool) {
	var rec verificationRecord
	data, err := iss.Ledger.Storage().Load(ctx, iss.Ledger.Keys.Verification(name))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			iss.Logger.Warn("reading a verification record", zap.String("identifier", name), zap.Error(err))
		}
		return rec, false
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		iss.Logger.Warn("ignoring a corrupt verification record", zap.String("identifier", name), zap.Error(err))
		return rec, false
	}
	rec.Domain = name
	age := time.Since(rec.VerifiedAt)
	return rec, age >= 0 && age < verificationWindow-reuseMargin
}

func (iss *Issuer) rememberVerification(ctx context.Context, name string, orderID int64) {
	data, _ := json.Marshal(verificationRecord{Domain: name, OrderID: orderID, VerifiedAt: time.Now().UTC()})
	if err := iss.Ledger.Storage().Store(ctx, iss.Ledger.Keys.Verification(name), data); err != nil {
		// Not fatal: the next issuance verifies the name again.
		iss.Logger.Warn("storing a verification record", zap.String("identifier", name), zap.Error(err))
	}
}

func (iss *Issuer) forgetVerification(ctx context.Context, name string) {
	if err := iss.Ledger.Storage().Delete(ctx, iss.Ledger.Keys.Verification(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		iss.Logger.Warn("deleting a verification record", zap.String("identifier", name), zap.Error(err))
	}
}
