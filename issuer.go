package sslci

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// SSLCI accepts a verification for finalize for 29 days. We reuse one for
// a day less, so a verification never expires between our check and the
// provider's.
const (
	verificationWindow = 29 * 24 * time.Hour
	reuseMargin        = 24 * time.Hour
)

// PreCheck refuses, before any API request, names SSLCI cannot verify with
// the configured method: IP addresses, and wildcards over HTTP.
func (iss *Issuer) PreCheck(_ context.Context, names []string, _ bool) error {
	for _, name := range names {
		if err := iss.checkName(name); err != nil {
			return err
		}
	}
	return nil
}

func (iss *Issuer) checkName(name string) error {
	switch {
	case name == "":
		return errors.New("sslci: empty name")
	case net.ParseIP(strings.Trim(name, "[]")) != nil:
		return fmt.Errorf("sslci: %s: SSLCI issues certificates for domain names, not IP addresses", name)
	case strings.Contains(name, "*") && iss.Method != api.MethodDNS:
		return fmt.Errorf("sslci: %s: wildcard names can only be verified by DNS; configure a DNS provider (`dns <provider> ...`)", name)
	case strings.Contains(name, "*") && (!strings.HasPrefix(name, "*.") || strings.Count(name, "*") > 1):
		return fmt.Errorf("sslci: %s: only a leading \"*.\" label is allowed in a wildcard name", name)
	}
	return nil
}

// Issue obtains a certificate for csr: it verifies every name on it that
// has no recent verification, concurrently, finalizes the whole set once and
// checks the answer before returning it. On failure the orders this call
// created and still pending are cancelled and no challenge is left behind.
func (iss *Issuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	names, err := csrNames(csr)
	if err != nil {
		return nil, err
	}
	if err := iss.PreCheck(ctx, names, false); err != nil {
		return nil, err
	}
	run := &issuance{iss: iss, orders: make(map[string]int64)}
	defer run.cancelPending()

	reused, err := run.verifyAll(ctx, names)
	if err != nil {
		return nil, err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})
	cert, err := iss.client.Finalize(ctx, names, csrPEM)
	if err != nil && len(reused) > 0 && (errors.Is(err, api.ErrInvalidRequest) || errors.Is(err, api.ErrRejected)) {
		// Our records said these names were verified; SSLCI may disagree
		// (a verification revoked, a clock apart). Verify them and try once more.
		iss.logger.Warn("finalize refused names verified recently; verifying them again",
			zap.Strings("names", reused), zap.Error(err))
		for _, name := range reused {
			iss.forgetVerification(ctx, name)
		}
		if _, err := run.verifyAll(ctx, reused); err != nil {
			return nil, err
		}
		cert, err = iss.client.Finalize(ctx, names, csrPEM)
	}
	if err != nil {
		return nil, fmt.Errorf("sslci: finalizing the certificate for %s: %w", strings.Join(names, ", "), err)
	}

	checked, err := checkCertificate(cert, names, csr, time.Now())
	if err != nil {
		return nil, fmt.Errorf("sslci: the certificate SSLCI returned for %s was refused: %w", strings.Join(names, ", "), err)
	}
	keySource := "csr"
	if checked.serverKey != nil {
		if iss.RequireCSRKey {
			return nil, fmt.Errorf("sslci: SSLCI returned a certificate for %s for a private key it generated itself, and require_csr_key is set; "+
				"the certificate was not used (SSLCI did not sign Caddy's CSR)", strings.Join(names, ", "))
		}
		if err := iss.keepServerKey(ctx, csr, checked.leaf, checked.serverKey); err != nil {
			return nil, fmt.Errorf("sslci: %s: keeping the private key SSLCI generated for the certificate: %w", strings.Join(names, ", "), err)
		}
		keySource = "sslci"
	}

	orders := run.orderMap()
	iss.logger.Info("certificate issued by SSLCI",
		zap.Strings("names", names), zap.String("key", keySource), zap.Time("not_after", checked.leaf.NotAfter),
		zap.Any("verification_orders", orders))
	return &certmagic.IssuedCertificate{
		Certificate: checked.chainPEM,
		Metadata: metadata{
			Endpoint:      iss.Endpoint,
			OrderIDs:      orders,
			CertificateID: cert.ID,
			KeySource:     keySource,
			Details:       cert.Details,
		},
	}, nil
}

// metadata is stored by certmagic next to the certificate.
type metadata struct {
	Endpoint string `json:"endpoint"`
	// OrderIDs are the verification orders made for this certificate, by
	// name; names whose recent verification was reused have none.
	OrderIDs      map[string]int64 `json:"order_ids,omitempty"`
	CertificateID int64            `json:"certificate_id,omitempty"`
	// KeySource is "csr" when the certificate is for the key Caddy made,
	// "sslci" when it is for the key SSLCI generated (stored in its place).
	KeySource string      `json:"key_source"`
	Details   api.Details `json:"details"`
}

// csrNames returns the CSR's DNS names, lowercased and without duplicates;
// a CSR naming IPs, emails or URIs is refused.
func csrNames(csr *x509.CertificateRequest) ([]string, error) {
	if len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, errors.New("sslci: the CSR names IP addresses, email addresses or URIs; SSLCI issues for domain names only")
	}
	var names []string
	for _, n := range csr.DNSNames {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("sslci: the CSR has no DNS names")
	}
	return names, nil
}

// issuance is the state of one Issue call.
type issuance struct {
	iss *Issuer

	mu        sync.Mutex
	orders    map[string]int64 // orders this call created, by name
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
		if r.iss.recentlyVerified(ctx, name) {
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
func (r *issuance) verify(ctx context.Context, name string) error {
	iss := r.iss
	v, err := iss.client.RequestVerification(ctx, name, iss.Method)
	if err != nil {
		return fmt.Errorf("sslci: %s: requesting a verification: %w", name, err)
	}
	r.mu.Lock()
	r.orders[name] = v.OrderID
	r.mu.Unlock()
	if !strings.EqualFold(strings.TrimSuffix(v.Domain, "."), name) {
		return fmt.Errorf("sslci: %s: SSLCI answered with a verification for %q (order %d)", name, v.Domain, v.OrderID)
	}

	cleanUp, err := iss.solver.present(ctx, v)
	if err != nil {
		return fmt.Errorf("sslci: %s: putting the %s challenge in place (order %d): %w", name, v.Method, v.OrderID, err)
	}
	defer cleanUp()

	if err := iss.confirm(ctx, v); err != nil {
		return fmt.Errorf("sslci: %s: confirming the verification (order %d): %w", name, v.OrderID, err)
	}
	r.mu.Lock()
	r.confirmed = append(r.confirmed, v.OrderID)
	r.mu.Unlock()
	iss.rememberVerification(ctx, name, v.OrderID)
	return nil
}

// confirm asks SSLCI to check the verification, and asks again with
// back-off while SSLCI says the check is still in progress.
func (iss *Issuer) confirm(ctx context.Context, v *api.Verification) error {
	timeout := time.Duration(iss.VerificationTimeout)
	if timeout == 0 {
		timeout = defaultVerificationTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := 500 * time.Millisecond
	for {
		_, err := iss.client.ConfirmVerification(ctx, api.ConfirmRequest{Domain: v.Domain, OrderID: v.OrderID, Method: v.Method})
		if !errors.Is(err, api.ErrPending) {
			return err
		}
		iss.logger.Debug("verification still in progress at SSLCI", zap.String("domain", v.Domain), zap.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return fmt.Errorf("still in progress after %s (verification_timeout): %w", timeout, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 15*time.Second)
	}
}

// cancelPending cancels the orders this call created that SSLCI has not
// confirmed, whatever happened, with a context of its own: the caller's may
// be cancelled already. Confirmed orders are kept: they hold the
// verification a later finalize can use.
func (r *issuance) cancelPending() {
	r.mu.Lock()
	var pending []int64
	for _, id := range r.orders {
		if !slices.Contains(r.confirmed, id) {
			pending = append(pending, id)
		}
	}
	r.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range pending {
		if err := r.iss.client.Delete(ctx, api.RecordOrder, id); err != nil {
			r.iss.logger.Error("cancelling an SSLCI order", zap.Int64("order_id", id), zap.Error(err))
			continue
		}
		r.iss.logger.Info("cancelled SSLCI order", zap.Int64("order_id", id))
	}
}

func (r *issuance) orderMap() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.orders) == 0 {
		return nil
	}
	return maps.Clone(r.orders)
}

// verificationRecord is kept in storage for each name SSLCI confirmed, so
// that every Caddy sharing the storage can skip verifying it again.
type verificationRecord struct {
	Domain     string    `json:"domain"`
	OrderID    int64     `json:"order_id"`
	VerifiedAt time.Time `json:"verified_at"`
}

// verificationKey is per endpoint and per account (a hash of the token,
// never the token), since SSLCI's verifications belong to an account.
func (iss *Issuer) verificationKey(name string) string {
	return path.Join("sslci", certmagic.StorageKeys.Safe(iss.IssuerKey()), iss.account, "verifications", certmagic.StorageKeys.Safe(name)+".json")
}

func (iss *Issuer) recentlyVerified(ctx context.Context, name string) bool {
	data, err := iss.getStorage().Load(ctx, iss.verificationKey(name))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			iss.logger.Warn("reading a verification record", zap.String("domain", name), zap.Error(err))
		}
		return false
	}
	var rec verificationRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		iss.logger.Warn("ignoring a corrupt verification record", zap.String("domain", name), zap.Error(err))
		return false
	}
	age := time.Since(rec.VerifiedAt)
	return age >= 0 && age < verificationWindow-reuseMargin
}

func (iss *Issuer) rememberVerification(ctx context.Context, name string, orderID int64) {
	data, _ := json.Marshal(verificationRecord{Domain: name, OrderID: orderID, VerifiedAt: time.Now().UTC()})
	if err := iss.getStorage().Store(ctx, iss.verificationKey(name), data); err != nil {
		// Not fatal: the next issuance verifies the name again.
		iss.logger.Warn("storing a verification record", zap.String("domain", name), zap.Error(err))
	}
}

func (iss *Issuer) forgetVerification(ctx context.Context, name string) {
	if err := iss.getStorage().Delete(ctx, iss.verificationKey(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		iss.logger.Warn("deleting a verification record", zap.String("domain", name), zap.Error(err))
	}
}

// checkedCertificate is a finalize answer that passed checkCertificate.
type checkedCertificate struct {
	leaf     *x509.Certificate
	chainPEM []byte // leaf, then the chain from "ca"
	// serverKey is SSLCI's private key (PEM) when the certificate is for it
	// rather than for the CSR's key.
	serverKey []byte
}

// checkCertificate refuses anything Caddy could not serve as asked: a leaf
// that does not parse, misses a requested name, is not valid now, does not
// chain through "ca", or is for a key that is neither the CSR's nor the one
// SSLCI returned.
func checkCertificate(cert *api.Certificate, names []string, csr *x509.CertificateRequest, now time.Time) (*checkedCertificate, error) {
	certs, err := parseCertificates(cert.CertificatePEM)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("field crt: %v", errOr(err, "no certificate"))
	}
	leaf := certs[0]
	chain, err := parseCertificates(cert.CAPEM)
	if err != nil {
		return nil, fmt.Errorf("field ca: %w", err)
	}
	// Some APIs put the chain after the leaf in "crt"; accept it there too.
	chain = append(certs[1:], chain...)
	if len(chain) == 0 {
		return nil, errors.New("no issuing chain (field ca is empty)")
	}
	for _, name := range names {
		if !slices.ContainsFunc(leaf.DNSNames, func(s string) bool { return strings.EqualFold(s, name) }) {
			return nil, fmt.Errorf("the certificate does not cover %s (it names %s)", name, strings.Join(leaf.DNSNames, ", "))
		}
	}
	if now.Before(leaf.NotBefore.Add(-5*time.Minute)) || !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("the certificate is not valid now (valid from %s to %s)", leaf.NotBefore.UTC(), leaf.NotAfter.UTC())
	}
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	for _, c := range chain[:len(chain)-1] {
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("the certificate does not chain through the returned ca: %w", err)
	}

	out := &checkedCertificate{leaf: leaf}
	switch {
	case publicKeysEqual(leaf.PublicKey, csr.PublicKey):
	case len(cert.PrivateKeyPEM) > 0:
		key, err := certmagic.PEMDecodePrivateKey(cert.PrivateKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("field key: %w", err)
		}
		if !publicKeysEqual(leaf.PublicKey, key.Public()) {
			return nil, errors.New("the certificate is for neither the CSR's key nor the key SSLCI returned")
		}
		// Re-encode: what we store is a key we have parsed, in certmagic's form.
		if out.serverKey, err = certmagic.PEMEncodePrivateKey(key); err != nil {
			return nil, fmt.Errorf("field key: %w", err)
		}
	default:
		return nil, errors.New("the certificate is not for the CSR's key, and SSLCI returned no key")
	}

	var buf bytes.Buffer
	for _, c := range append([]*x509.Certificate{leaf}, chain...) {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	out.chainPEM = buf.Bytes()
	return out, nil
}

func parseCertificates(pemData []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, pemData = pem.Decode(pemData)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 && len(bytes.TrimSpace(pemData)) > 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func errOr(err error, msg string) string {
	if err != nil {
		return err.Error()
	}
	return msg
}
