package issuance

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/internal/ledger"
)

// This file reuses a recent verification of a name instead of verifying
// it again, by the ledger's record and rule (ledger.Verification): every
// Caddy sharing the storage skips verifying a name while SSLCI still
// accepts its verification. A missing or unreadable record only costs a
// verification; one is written only where an issuance may read it
// (ledger.Verification.WorthStoring).

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

// verificationConfirmed notes that SSLCI confirmed name by order orderID,
// now: its record is stored once the issuance ends (storeVerifications).
func (r *run) verificationConfirmed(name string, orderID int64) {
	v := ledger.Verification{Domain: name, OrderID: orderID, VerifiedAt: time.Now().UTC()}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.verified = append(r.verified, v)
}

// storeVerifications writes the records of the names this call verified,
// beside the steps left, if an issuance may read them: when leaf, the
// certificate they were for, renews while SSLCI still accepts them, or
// when there is no certificate (leaf nil: certmagic tries again). Issue
// calls it once: with the certificate, or with nil on failure.
func (r *run) storeVerifications(ctx context.Context, leaf *x509.Certificate) {
	r.mu.Lock()
	verified := slices.Clone(r.verified)
	r.mu.Unlock()
	var issued ledger.Leaf
	if leaf != nil {
		issued = ledger.NewLeaf("", leaf)
	}
	for _, v := range verified {
		if leaf != nil && !v.WorthStoring(issued, r.iss.RenewalRatio) {
			continue
		}
		r.meanwhile(ctx, func(ctx context.Context) {
			if err := r.iss.Ledger.StoreVerification(ctx, v); err != nil {
				// Not fatal: the next issuance verifies the name again.
				r.logger.Warn("storing a verification record", zap.String("identifier", v.Domain), zap.Error(err))
			}
		})
	}
}

func (iss *Issuer) forgetVerification(ctx context.Context, name string) {
	if err := iss.Ledger.ForgetVerification(ctx, name); err != nil {
		iss.Logger.Warn("deleting a verification record", zap.String("identifier", name), zap.Error(err))
	}
}
