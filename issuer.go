package sslci

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// This file is the Issue flow (certmagic.Issuer): certmagic calls Issue
// with a CSR for the names of one certificate, holding its lock for them,
// and stores what it returns (SSLCI's key, if the certificate is for it:
// see serverkey.go). Every
// order and certificate it asks for is written to the ledger first
// (ledger.go), so that a failed step can be retried within the Issue once
// SSLCI's list has told what the lost answer had made (reconcile.go).

// Issue obtains a certificate for csr: it settles what earlier attempts
// for these names left at SSLCI, verifies every name on the CSR that has
// no recent verification, concurrently (resuming a pending order left by
// a Caddy that stopped), finalizes the whole set and checks the answer
// before returning it. A step that fails for a passing reason is retried
// within the call. On failure the orders this call created and still
// pending are cancelled and no challenge is left behind.
func (iss *Issuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	names, err := csrNames(csr)
	if err == nil {
		err = iss.checkNames(names)
	}
	if err != nil {
		return nil, fmt.Errorf("sslci: %w", err)
	}
	// As certmagic's ZeroSSL issuer: the names once, on every line logged.
	run := &issuance{iss: iss, logger: iss.logger.With(zap.Strings("identifiers", names)), names: names,
		orders: make(map[string]*orderRecord), reused: make(map[string]int64)}
	issued, err := run.issue(ctx, csr, names)
	run.cleanUp(err != nil)
	if err != nil {
		return nil, fmt.Errorf("sslci: %w", iss.hint(err))
	}
	return issued, nil
}

func (r *issuance) issue(ctx context.Context, csr *x509.CertificateRequest, names []string) (*certmagic.IssuedCertificate, error) {
	iss := r.iss
	ctx = withLogNames(ctx, names...)
	var reused, fresh []string
	for _, name := range names {
		if rec, ok := iss.recentVerification(ctx, name); ok {
			r.verificationReused(rec)
			reused = append(reused, name)
		} else {
			fresh = append(fresh, name)
		}
	}
	// Records of these names exist only after a crash or a failure:
	// settle them first (one GET list), keeping pending orders to resume.
	var resumable map[string]*orderRecord
	err := r.retry(ctx, func() (err error) {
		resumable, err = iss.reconcile(ctx, forNames(names), fresh)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reconciling earlier requests for %s with SSLCI's list: %w", strings.Join(names, ", "), err)
	}
	if err := r.verifyAll(ctx, fresh, resumable); err != nil {
		return nil, err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})
	r.logger.Info("finalizing the certificate")
	cert, err := r.finalize(ctx, names, csrPEM)
	if err != nil && len(reused) > 0 && (errors.Is(err, api.ErrInvalidRequest) || errors.Is(err, api.ErrRejected)) {
		// Our records said these names were verified; SSLCI may disagree
		// (a verification revoked, a clock apart). Verify them and try once more.
		r.logger.Warn("finalize refused names verified recently; verifying them again",
			zap.Strings("verified_recently", reused), zap.Error(err))
		for _, name := range reused {
			iss.forgetVerification(ctx, name)
		}
		if err := r.verifyAll(ctx, reused, nil); err != nil {
			return nil, err
		}
		cert, err = r.finalize(ctx, names, csrPEM)
	}
	if err != nil {
		return nil, fmt.Errorf("finalizing the certificate for %s: %w", strings.Join(names, ", "), err)
	}

	checked, err := checkCertificate(cert, names, csr, iss.roots, time.Now())
	if err != nil {
		r.refuse(ctx, cert)
		return nil, r.refused("unknown", fmt.Errorf("the certificate SSLCI returned for %s was refused: %w", strings.Join(names, ", "), err))
	}
	keySource := "csr"
	if checked.serverKey != nil {
		if iss.RequireCSRKey {
			r.refuse(ctx, cert)
			return nil, r.refused("sslci", fmt.Errorf("SSLCI returned a certificate for %s for a private key it generated itself, and require_csr_key is set; "+
				"the certificate was not used (SSLCI did not sign Caddy's CSR)", strings.Join(names, ", ")))
		}
		if err := iss.keepServerKey(ctx, csr, checked.leaf, checked.serverKey); err != nil {
			r.refuse(ctx, cert) // never stored without its key: ours to delete
			return nil, fmt.Errorf("keeping the private key SSLCI generated for the certificate for %s: %w", strings.Join(names, ", "), err)
		}
		keySource = "sslci"
	}
	r.obtained(ctx, checked.leaf.NotAfter)

	orders, reusedNames := r.orderMap()
	iss.metrics.obtained(keySource)
	r.logger.Info("certificate issued by SSLCI",
		zap.String("key_source", keySource), zap.Time("not_after", checked.leaf.NotAfter),
		zap.Any("verification_orders", orders), zap.Strings("reused_verifications", reusedNames))
	return &certmagic.IssuedCertificate{
		Certificate: checked.chainPEM,
		Metadata: metadata{
			Endpoint:      iss.Endpoint,
			OrderIDs:      orders,
			Reused:        reusedNames,
			CertificateID: cert.ID,
			KeySource:     keySource,
			Details:       cert.Details,
		},
	}, nil
}

// metadata is stored by certmagic next to the certificate.
type metadata struct {
	Endpoint string `json:"endpoint"`
	// OrderIDs are the verification orders of the names: made for this
	// certificate or, for the names in Reused, a recent one reused.
	OrderIDs      map[string]int64 `json:"order_ids,omitempty"`
	Reused        []string         `json:"reused_verifications,omitempty"`
	CertificateID int64            `json:"certificate_id,omitempty"`
	// KeySource is "csr" when the certificate is for the key Caddy made,
	// "sslci" when it is for the key SSLCI generated (stored in its place).
	KeySource string      `json:"key_source"`
	Details   api.Details `json:"details"`
}

// issuance is the state of one Issue call.
type issuance struct {
	iss    *Issuer
	logger *zap.Logger // the issuer's, with the certificate's names
	names  []string

	mu        sync.Mutex
	orders    map[string]*orderRecord // the orders this call uses, by name
	reused    map[string]int64        // recent verifications' orders reused, by name
	confirmed []int64                 // of those, the ones SSLCI confirmed
	// unsettled: a request's answer was lost, or a refused certificate
	// could not be deleted: reconcile before sending again, and on the way out.
	unsettled bool
	cert      *certRecord // the finalize answered
}

// verifyAll verifies the names concurrently, resuming the orders given.
// The first failure cancels the rest.
func (r *issuance) verifyAll(ctx context.Context, names []string, resume map[string]*orderRecord) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = r.verify(ctx, name, resume[name]); errs[i] != nil {
				cancel(errs[i])
			}
		}()
	}
	wg.Wait()
	// Report the failure that caused the others, not the cancellations.
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return errors.Join(errs...)
}

// verify runs one name through request (or the order to resume), present,
// confirm and clean-up.
func (r *issuance) verify(ctx context.Context, name string, rec *orderRecord) (err error) {
	iss := r.iss
	ctx = withLogNames(ctx, name)
	if rec != nil {
		r.logger.Info("resuming an SSLCI order left pending", zap.String("identifier", name), zap.Int64("order_id", rec.OrderID))
		r.use(rec)
	}
	for {
		resumed := rec != nil
		if !resumed {
			if rec, err = r.request(ctx, name); err != nil {
				return fmt.Errorf("%s: requesting a verification: %w", name, err)
			}
		}
		v := rec.verification()
		cleanUp, err := iss.solver.present(ctx, v)
		if err != nil {
			return r.verificationDone(name, v, fmt.Errorf("%s: putting the %s challenge in place (order %d): %w", name, v.Method, v.OrderID, err))
		}
		err = r.retry(ctx, func() error { return r.confirm(ctx, v) })
		cleanUp()
		if err != nil && resumed && !transient(err) && ctx.Err() == nil {
			// The order left behind cannot be confirmed (gone, or its
			// check fails): cancel it and verify with a new one.
			r.logger.Info("the resumed SSLCI order could not be confirmed; requesting a new one",
				zap.String("identifier", name), zap.Int64("order_id", v.OrderID), zap.Error(err))
			r.cancel(ctx, rec)
			rec = nil
			continue
		}
		if err != nil {
			return r.verificationDone(name, v, fmt.Errorf("%s: confirming the verification (order %d): %w", name, v.OrderID, err))
		}
		_ = r.verificationDone(name, v, nil) // counted and logged; nil for nil
		r.mu.Lock()
		r.confirmed = append(r.confirmed, v.OrderID)
		r.mu.Unlock()
		iss.drop(ctx, rec.key) // confirmed: not pending any more
		iss.rememberVerification(ctx, name, v.OrderID)
		return nil
	}
}

// cleanUp runs whatever happened, with a context of its own (the caller's
// may be cancelled already): it cancels the orders this call used that
// SSLCI has not confirmed (confirmed ones hold the verification a later
// finalize can use), and, if the call failed, settles what a lost answer
// left (a call that succeeded settled each before sending again).
func (r *issuance) cleanUp(failed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.mu.Lock()
	var pending []*orderRecord
	for _, rec := range r.orders {
		if !slices.Contains(r.confirmed, rec.OrderID) {
			pending = append(pending, rec)
		}
	}
	unsettled := r.unsettled
	r.mu.Unlock()
	for _, rec := range pending {
		r.cancel(ctx, rec)
	}
	if failed && unsettled {
		if _, err := r.iss.reconcile(ctx, forNames(r.names), nil); err != nil {
			r.logger.Warn("reconciling with SSLCI's list; left for the next issuance of these names", zap.Error(err))
		}
	}
	r.iss.saveFloor(ctx)
}

// cancel cancels a pending order of this call and drops its record; on
// failure the record stays, for a later reconciliation.
func (r *issuance) cancel(ctx context.Context, rec *orderRecord) {
	r.mu.Lock()
	if r.orders[rec.Domain] == rec {
		delete(r.orders, rec.Domain)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	// A 400 is "no such order": gone already.
	if err := r.iss.client.Delete(withLogNames(ctx, rec.Domain), api.RecordOrder, rec.OrderID); err != nil && !errors.Is(err, api.ErrInvalidRequest) {
		r.logger.Error("cancelling an SSLCI order; left for a later reconciliation", zap.String("identifier", rec.Domain), zap.Int64("order_id", rec.OrderID), zap.Error(err))
		return
	}
	r.iss.drop(ctx, rec.key)
	r.iss.metrics.cancelled()
	r.logger.Info("cancelled SSLCI order", zap.String("identifier", rec.Domain), zap.Int64("order_id", rec.OrderID))
}

// orderMap is the verification order of each name: made (or resumed) by
// this call, or reused (those names are returned in reused too).
func (r *issuance) orderMap() (orders map[string]int64, reused []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.orders)+len(r.reused) == 0 {
		return nil, nil
	}
	orders = make(map[string]int64, len(r.orders))
	for name, rec := range r.orders {
		orders[name] = rec.OrderID
	}
	for name, id := range r.reused {
		if _, made := orders[name]; !made { // else verified again when finalize refused it
			orders[name] = id
			reused = append(reused, name)
		}
	}
	slices.Sort(reused)
	return orders, reused
}
