// Package issuance is the flow of one issuance: it turns one CSR into one
// checked certificate through SSLCI's API. It verifies each name (reusing
// a recent verification, resuming an order a stopped Caddy left), finalizes
// the set, checks the answer (certcheck.go), and retries a failed step by
// the one retry policy (retry.go). Every request that creates something at
// SSLCI is written to the ledger first (internal/ledger), and what a lost
// answer made is reconciled there. Hints for the errors it returns are in
// hints.go.
//
// It knows nothing of Caddy's modules: the root package gives it a
// Solver for the challenges, a RememberKey for SSLCI's private keys and
// Metrics, and stores what Issue returns through certmagic.
package issuance

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
	"github.com/sslci/caddy-sslci/internal/ledger"
)

// A Solver puts a verification in place so that SSLCI's check succeeds.
// rec is the answered record of its order: an HTTP solver stores it with
// the challenge (ledger.StoreChallenge), where the ledger finds the answer.
// The returned clean-up removes it; it must work even when ctx is done.
type Solver interface {
	Present(ctx context.Context, v *api.Verification, rec *ledger.OrderRecord) (cleanUp func(), err error)
}

// Metrics counts what the steps do; the root package's collectors.
type Metrics interface {
	Verification(method, result string) // result: one of the Verification* constants
	Obtained(keySource string)
	Refused(keySource string)
	Cancelled()
	Failed(step string) // once per failed Issue: one of the Step* constants
}

// Results of a verification, as Metrics.Verification gets them.
const (
	VerificationRequested = "requested"
	VerificationConfirmed = "confirmed"
	VerificationFailed    = "failed"
	VerificationReused    = "reused"
)

// DefaultVerificationTimeout is Issuer.VerificationTimeout's default.
const DefaultVerificationTimeout = 5 * time.Minute

// Issuer obtains certificates from one SSLCI endpoint and account.
type Issuer struct {
	Endpoint            string // recorded in the metadata
	Method              string // api.MethodHTTP or api.MethodDNS
	RequireCSRKey       bool   // refuse certificates for a key SSLCI generated
	VerificationTimeout time.Duration
	// Roots returns the trusted roots, waiting for them if they are still
	// being loaded; nil, or a nil Roots: the system's.
	Roots func() *x509.CertPool
	Retry RetryPolicy // zero: DefaultRetry
	// HTTPPort is where SSLCI's HTTP check arrives, for the hint.
	HTTPPort func() int

	Client  *api.Client
	Ledger  *ledger.Ledger
	Solver  Solver
	Metrics Metrics
	Logger  *zap.Logger
	// RememberKey makes SSLCI's key known to the key storage wrapper, by
	// the CSR's key, before Issue returns the certificate: certmagic then
	// stores SSLCI's key in place of the CSR's, before the certificate.
	RememberKey func(csr *x509.CertificateRequest, keyPEM []byte)
	// KeyPolicy is what the automation policy asks of the key, which a
	// certificate for SSLCI's key is compared with (keypolicy.go).
	KeyPolicy KeyPolicy
	// RenewalRatio is the automation policy's renewal_window_ratio (0:
	// certmagic's default): whether a certificate's renewal reuses the
	// verifications made for it, and so whether they are stored.
	RenewalRatio float64
}

// Metadata is stored by certmagic next to the certificate.
type Metadata struct {
	Endpoint string `json:"endpoint"`
	// The finalize record that obtained the certificate: the stored
	// certificate's metadata is what settles that record (ledger.Link).
	ledger.Link
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

// Issue obtains a certificate for csr: it settles what earlier attempts
// for these names left at SSLCI, verifies every name on the CSR that has
// no recent verification, concurrently (resuming a pending order left by
// a Caddy that stopped), finalizes the whole set and checks the answer
// before returning it. A step that fails for a passing reason is retried
// within the call. On failure the orders this call created and still
// pending are cancelled and no challenge is left behind. Its errors start
// with "sslci: " and end with a hint where the cause is known.
func (iss *Issuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	defer iss.Ledger.Issuing()()
	names, err := CSRNames(csr)
	if err == nil {
		err = CheckNames(names, iss.Method)
	}
	if err != nil {
		iss.Metrics.Failed(StepRequest)
		return nil, fmt.Errorf("sslci: %w", err)
	}
	// As certmagic's ZeroSSL issuer: the names once, on every line logged.
	r := &run{iss: iss, logger: iss.Logger.With(zap.Strings("identifiers", names)), names: names,
		orders: make(map[string]*ledger.OrderRecord), reused: make(map[string]int64)}
	issued, err := r.issue(ctx, csr, names)
	if err != nil {
		r.storeVerifications(ctx, nil)
	}
	r.writes.Wait()
	r.cleanUp(err != nil)
	if err != nil {
		iss.Metrics.Failed(failedStep(err))
		return nil, fmt.Errorf("sslci: %w", Hint(err, iss.HTTPPort))
	}
	return issued, nil
}

// run is the state of one Issue call.
type run struct {
	iss    *Issuer
	logger *zap.Logger // the issuer's, with the certificate's names
	names  []string

	mu       sync.Mutex
	orders   map[string]*ledger.OrderRecord // the orders this call uses, by name
	reused   map[string]int64               // recent verifications' orders reused, by name
	verified []ledger.Verification          // the verifications SSLCI confirmed to this call
	// unsettled: a request's answer was lost, or a refused certificate
	// could not be deleted: reconcile before sending again, and on the way out.
	unsettled bool
	cert      *ledger.CertRecord // the finalize answered
	writes    sync.WaitGroup     // meanwhile's, waited for before Issue returns
}

// meanwhile runs f, a write the next steps do not wait for, beside them:
// on a disk that syncs every write, one sync less on the way to the
// certificate. Issue waits for it before returning; it is not cancelled.
func (r *run) meanwhile(ctx context.Context, f func(context.Context)) {
	r.writes.Go(func() { f(context.WithoutCancel(ctx)) })
}

func (r *run) issue(ctx context.Context, csr *x509.CertificateRequest, names []string) (*certmagic.IssuedCertificate, error) {
	iss := r.iss
	ctx = WithLogNames(ctx, names...)
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
	var resumable map[string]*ledger.OrderRecord
	err := r.retry(ctx, func() (err error) {
		resumable, err = r.reconcile(ctx, ledger.ForNames(names), fresh)
		return err
	})
	if err != nil {
		return nil, atStep(StepRequest, fmt.Errorf("reconciling earlier requests for %s with SSLCI's list: %w", strings.Join(names, ", "), err))
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
		return nil, atStep(StepFinalize, fmt.Errorf("finalizing the certificate for %s: %w", strings.Join(names, ", "), err))
	}

	checked, err := CheckCertificate(cert, names, csr, iss.roots(), time.Now())
	if err != nil {
		r.refuse(ctx, cert)
		return nil, atStep(StepCheck, r.refused("unknown", fmt.Errorf("the certificate SSLCI returned for %s was refused: %w", strings.Join(names, ", "), err)))
	}
	keySource := "csr"
	if checked.ServerKey != nil {
		if iss.RequireCSRKey {
			r.refuse(ctx, cert)
			return nil, atStep(StepCheck, r.refused("sslci", fmt.Errorf("SSLCI returned a certificate for %s for a private key it generated itself, and require_csr_key is set; "+
				"the certificate was not used (SSLCI did not sign Caddy's CSR)", strings.Join(names, ", "))))
		}
		iss.RememberKey(csr, checked.ServerKey)
		keySource = "sslci"
		r.warnKeyPolicy(csr, checked.Leaf)
	}
	r.storeVerifications(ctx, checked.Leaf)
	r.obtained()

	orders, reusedNames := r.orderMap()
	iss.Metrics.Obtained(keySource)
	r.logger.Info("certificate issued by SSLCI",
		zap.String("key_source", keySource), zap.Time("not_after", checked.Leaf.NotAfter),
		zap.Any("verification_orders", orders), zap.Strings("reused_verifications", reusedNames))
	return &certmagic.IssuedCertificate{
		Certificate: checked.ChainPEM,
		Metadata: Metadata{
			Endpoint:      iss.Endpoint,
			Link:          ledger.Link{Record: r.cert.Key, NotAfter: checked.Leaf.NotAfter.UTC()},
			OrderIDs:      orders,
			Reused:        reusedNames,
			CertificateID: cert.ID,
			KeySource:     keySource,
			Details:       cert.Details,
		},
	}, nil
}

// verifyAll verifies the names concurrently, resuming the orders given.
// The first failure cancels the rest.
func (r *run) verifyAll(ctx context.Context, names []string, resume map[string]*ledger.OrderRecord) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		wg.Go(func() {
			if errs[i] = r.verify(ctx, name, resume[name]); errs[i] != nil {
				cancel(errs[i])
			}
		})
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
func (r *run) verify(ctx context.Context, name string, rec *ledger.OrderRecord) (err error) {
	iss := r.iss
	ctx = WithLogNames(ctx, name)
	if rec != nil {
		r.logger.Info("resuming an SSLCI order left pending", zap.String("identifier", name), zap.Int64("order_id", rec.OrderID))
		r.use(rec)
	}
	for {
		resumed := rec != nil
		if !resumed {
			if rec, err = r.request(ctx, name); err != nil {
				return atStep(StepRequest, fmt.Errorf("%s: requesting a verification: %w", name, err))
			}
		}
		v := rec.Verification()
		cleanUp, err := iss.Solver.Present(ctx, v, rec)
		if err != nil {
			r.keepAnswer(ctx, rec)
			return atStep(StepConfirm, r.verificationDone(name, v, fmt.Errorf("%s: putting the %s challenge in place (order %d): %w", name, v.Method, v.OrderID, err)))
		}
		deadline := time.Now().Add(iss.verificationTimeout())
		err = r.retry(ctx, func() error { return r.confirm(ctx, v, deadline) })
		if err != nil {
			r.keepAnswer(ctx, rec)
		}
		cleanUp()
		if err != nil && resumed && !Transient(err) && ctx.Err() == nil {
			// The order left behind cannot be confirmed (gone, or its
			// check fails): cancel it and verify with a new one.
			r.logger.Info("the resumed SSLCI order could not be confirmed; requesting a new one",
				zap.String("identifier", name), zap.Int64("order_id", v.OrderID), zap.Error(err))
			r.cancel(ctx, rec)
			rec = nil
			continue
		}
		if err != nil {
			return atStep(StepConfirm, r.verificationDone(name, v, fmt.Errorf("%s: confirming the verification (order %d): %w", name, v.OrderID, err)))
		}
		_ = r.verificationDone(name, v, nil) // counted and logged; nil for nil
		// Confirmed: the order is not pending any more (the finalize does
		// not need its record gone, so it goes while the finalize runs),
		// and the verification is there for later issuances.
		r.meanwhile(ctx, func(ctx context.Context) { iss.Ledger.Drop(ctx, rec.Key) })
		r.verificationConfirmed(name, v.OrderID)
		return nil
	}
}

func (iss *Issuer) roots() *x509.CertPool {
	if iss.Roots == nil {
		return nil
	}
	return iss.Roots()
}

func (iss *Issuer) verificationTimeout() time.Duration {
	if iss.VerificationTimeout > 0 {
		return iss.VerificationTimeout
	}
	return DefaultVerificationTimeout
}

// cleanUp runs whatever happened, with a context of its own (the caller's
// may be cancelled already): it cancels the orders this call used that
// SSLCI has not confirmed (confirmed ones hold the verification a later
// finalize can use), and, if the call failed, settles what a lost answer
// left (a call that succeeded settled each before sending again).
func (r *run) cleanUp(failed bool) {
	ctx, cancel := ledger.Detached(context.Background())
	defer cancel()
	r.mu.Lock()
	var pending []*ledger.OrderRecord
	for _, rec := range r.orders {
		if !slices.ContainsFunc(r.verified, func(v ledger.Verification) bool { return v.OrderID == rec.OrderID }) {
			pending = append(pending, rec)
		}
	}
	unsettled := r.unsettled
	r.mu.Unlock()
	for _, rec := range pending {
		r.cancel(ctx, rec)
	}
	if failed && unsettled {
		if _, err := r.iss.Ledger.Reconcile(ctx, ledger.ForNames(r.names), nil, r.iss.Method); err != nil {
			r.logger.Warn("reconciling with SSLCI's list; left for the next issuance of these names", zap.Error(err))
		}
	}
	r.iss.Ledger.SaveFloor(ctx)
}

// cancel cancels a pending order of this call and drops its record; on
// failure the record stays, for a later reconciliation.
func (r *run) cancel(ctx context.Context, rec *ledger.OrderRecord) {
	r.mu.Lock()
	if r.orders[rec.Domain] == rec {
		delete(r.orders, rec.Domain)
	}
	r.mu.Unlock()
	ctx, cancel := ledger.Detached(ctx)
	defer cancel()
	err := r.retry(ctx, func() error { return r.iss.Ledger.Delete(WithLogNames(ctx, rec.Domain), api.RecordOrder, rec.OrderID) })
	if err != nil {
		r.logger.Error("cancelling an SSLCI order; left for a later reconciliation", zap.String("identifier", rec.Domain), zap.Int64("order_id", rec.OrderID), zap.Error(err))
		return
	}
	r.iss.Ledger.Drop(ctx, rec.Key)
	r.iss.Metrics.Cancelled()
	r.logger.Info("cancelled SSLCI order", zap.String("identifier", rec.Domain), zap.Int64("order_id", rec.OrderID))
}

// reconcile settles the records in scope (ledger.Reconcile) at the start
// of an Issue, or before a request whose answer was lost is sent again. A
// deletion that failed for a passing reason fails the attempt, to be
// retried; one refused for good is left for a later reconciliation (the
// ledger logs it).
func (r *run) reconcile(ctx context.Context, sc ledger.Scope, resume []string) (map[string]*ledger.OrderRecord, error) {
	resumed, err := r.iss.Ledger.Reconcile(ctx, sc, resume, r.iss.Method)
	if errors.Is(err, ledger.ErrUnsettled) && !Transient(err) {
		return resumed, nil
	}
	return resumed, err
}

// orderMap is the verification order of each name: made (or resumed) by
// this call, or reused (those names are returned in reused too).
func (r *run) orderMap() (orders map[string]int64, reused []string) {
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
