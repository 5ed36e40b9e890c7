package sslci

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
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
// see serverkey.go).

// Issue obtains a certificate for csr: it verifies every name on it that
// has no recent verification, concurrently, finalizes the whole set once and
// checks the answer before returning it. On failure the orders this call
// created and still pending are cancelled and no challenge is left behind.
func (iss *Issuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	names, err := csrNames(csr)
	if err == nil {
		err = iss.checkNames(names)
	}
	if err != nil {
		return nil, fmt.Errorf("sslci: %w", err)
	}
	// As certmagic's ZeroSSL issuer: the names once, on every line logged.
	run := &issuance{iss: iss, logger: iss.logger.With(zap.Strings("identifiers", names)), orders: make(map[string]int64), reused: make(map[string]int64)}
	defer run.cancelPending()
	issued, err := run.issue(ctx, csr, names)
	if err != nil {
		return nil, fmt.Errorf("sslci: %w", iss.hint(err))
	}
	return issued, nil
}

func (r *issuance) issue(ctx context.Context, csr *x509.CertificateRequest, names []string) (*certmagic.IssuedCertificate, error) {
	iss := r.iss
	ctx = withLogNames(ctx, names...)
	reused, err := r.verifyAll(ctx, names)
	if err != nil {
		return nil, err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})
	r.logger.Info("finalizing the certificate")
	cert, err := iss.client.Finalize(ctx, names, csrPEM)
	if err != nil && len(reused) > 0 && (errors.Is(err, api.ErrInvalidRequest) || errors.Is(err, api.ErrRejected)) {
		// Our records said these names were verified; SSLCI may disagree
		// (a verification revoked, a clock apart). Verify them and try once more.
		r.logger.Warn("finalize refused names verified recently; verifying them again",
			zap.Strings("verified_recently", reused), zap.Error(err))
		for _, name := range reused {
			iss.forgetVerification(ctx, name)
		}
		if _, err := r.verifyAll(ctx, reused); err != nil {
			return nil, err
		}
		cert, err = iss.client.Finalize(ctx, names, csrPEM)
	}
	if err != nil {
		return nil, fmt.Errorf("finalizing the certificate for %s: %w", strings.Join(names, ", "), err)
	}

	checked, err := checkCertificate(cert, names, csr, iss.roots, time.Now())
	if err != nil {
		return nil, r.refused("unknown", fmt.Errorf("the certificate SSLCI returned for %s was refused: %w", strings.Join(names, ", "), err))
	}
	keySource := "csr"
	if checked.serverKey != nil {
		if iss.RequireCSRKey {
			return nil, r.refused("sslci", fmt.Errorf("SSLCI returned a certificate for %s for a private key it generated itself, and require_csr_key is set; "+
				"the certificate was not used (SSLCI did not sign Caddy's CSR)", strings.Join(names, ", ")))
		}
		if err := iss.keepServerKey(ctx, csr, checked.leaf, checked.serverKey); err != nil {
			return nil, fmt.Errorf("keeping the private key SSLCI generated for the certificate for %s: %w", strings.Join(names, ", "), err)
		}
		keySource = "sslci"
	}

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

	mu        sync.Mutex
	orders    map[string]int64 // orders this call created, by name
	reused    map[string]int64 // recent verifications' orders reused, by name
	confirmed []int64          // of those, the ones SSLCI confirmed
}

// verifyAll verifies the names concurrently, skipping those verified
// recently; it returns the skipped ones. The first failure cancels the rest.
func (r *issuance) verifyAll(ctx context.Context, names []string) (reused []string, _ error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		if rec, ok := r.iss.recentVerification(ctx, name); ok {
			r.verificationReused(rec)
			reused = append(reused, name)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = r.verify(ctx, name); errs[i] != nil {
				cancel(errs[i])
			}
		}()
	}
	wg.Wait()
	// Report the failure that caused the others, not the cancellations.
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return nil, cause
	}
	return reused, errors.Join(errs...)
}

// verify runs one name through request, present, confirm and clean-up.
func (r *issuance) verify(ctx context.Context, name string) (err error) {
	iss := r.iss
	ctx = withLogNames(ctx, name)
	v, err := iss.client.RequestVerification(ctx, name, iss.Method)
	if err != nil {
		return fmt.Errorf("%s: requesting a verification: %w", name, err)
	}
	r.verificationRequested(name, v)
	defer func() { err = r.verificationDone(name, v, err) }()
	r.mu.Lock()
	r.orders[name] = v.OrderID
	r.mu.Unlock()
	if !strings.EqualFold(strings.TrimSuffix(v.Domain, "."), name) {
		return fmt.Errorf("%s: SSLCI answered with a verification for %q (order %d)", name, v.Domain, v.OrderID)
	}

	cleanUp, err := iss.solver.present(ctx, v)
	if err != nil {
		return fmt.Errorf("%s: putting the %s challenge in place (order %d): %w", name, v.Method, v.OrderID, err)
	}
	defer cleanUp()

	if err := r.confirm(ctx, v); err != nil {
		return fmt.Errorf("%s: confirming the verification (order %d): %w", name, v.OrderID, err)
	}
	r.mu.Lock()
	r.confirmed = append(r.confirmed, v.OrderID)
	r.mu.Unlock()
	iss.rememberVerification(ctx, name, v.OrderID)
	return nil
}

// cancelPending cancels the orders this call created that SSLCI has not
// confirmed, whatever happened, with a context of its own: the caller's may
// be cancelled already. Confirmed orders are kept: they hold the
// verification a later finalize can use.
func (r *issuance) cancelPending() {
	r.mu.Lock()
	pending := make(map[string]int64)
	for name, id := range r.orders {
		if !slices.Contains(r.confirmed, id) {
			pending[name] = id
		}
	}
	r.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, id := range pending {
		if err := r.iss.client.Delete(withLogNames(ctx, name), api.RecordOrder, id); err != nil {
			r.logger.Error("cancelling an SSLCI order", zap.String("identifier", name), zap.Int64("order_id", id), zap.Error(err))
			continue
		}
		r.iss.metrics.cancelled()
		r.logger.Info("cancelled SSLCI order", zap.String("identifier", name), zap.Int64("order_id", id))
	}
}

// orderMap is the verification order of each name: made by this call, or
// reused (those names are returned in reused too).
func (r *issuance) orderMap() (orders map[string]int64, reused []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.orders)+len(r.reused) == 0 {
		return nil, nil
	}
	orders = maps.Clone(r.orders)
	for name, id := range r.reused {
		if _, made := orders[name]; !made { // else verified again when finalize refused it
			orders[name] = id
			reused = append(reused, name)
		}
	}
	slices.Sort(reused)
	return orders, reused
}
