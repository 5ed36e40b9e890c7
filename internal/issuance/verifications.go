package issuance

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/internal/ledger"
)

// This file reuses a recent verification of a name instead of verifying
// it again, by the ledger's record and rule (ledger.Verification): every
// Caddy sharing the storage skips verifying a name while SSLCI still
// accepts its verification. A missing or unreadable record only costs a
// verification.

// recentVerification returns the record of name if SSLCI confirmed it
// recently enough for finalize to use it.
func (iss *Issuer) recentVerification(ctx context.Context, name string) (ledger.Verification, bool) {
	rec, err := iss.Ledger.Verification(ctx, name)
	switch {
	case errors.Is(err, ledger.ErrCorrupt):
		iss.Logger.Warn("ignoring a corrupt verification record", zap.String("identifier", name), zap.Error(err))
	case err != nil:
		iss.Logger.Warn("reading a verification record", zap.String("identifier", name), zap.Error(err))
	}
	if rec == nil {
		return ledger.Verification{}, false
	}
	return *rec, rec.ReusableAt(time.Now())
}

func (iss *Issuer) rememberVerification(ctx context.Context, name string, orderID int64) {
	if err := iss.Ledger.RememberVerification(ctx, name, orderID); err != nil {
		// Not fatal: the next issuance verifies the name again.
		iss.Logger.Warn("storing a verification record", zap.String("identifier", name), zap.Error(err))
	}
}

func (iss *Issuer) forgetVerification(ctx context.Context, name string) {
	if err := iss.Ledger.ForgetVerification(ctx, name); err != nil {
		iss.Logger.Warn("deleting a verification record", zap.String("identifier", name), zap.Error(err))
	}
}
