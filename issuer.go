package sslci

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/internal/issuance"
)

// This file is the certmagic.Issuer side of the module: certmagic calls
// PreCheck, then Issue with a CSR for the names of one certificate, holding
// its lock for them, and stores what Issue returns (SSLCI's key, if the
// certificate is for it: see keystorage.go). The flow itself is
// internal/issuance's.

// PreCheck refuses, before any API request, names SSLCI cannot verify with
// the configured method: IP addresses, and wildcards over HTTP. certmagic
// then moves on to the policy's next issuer: a name refused here costs no
// API request.
func (iss *Issuer) PreCheck(_ context.Context, names []string, _ bool) error {
	if err := issuance.CheckNames(names, iss.Method); err != nil {
		return fmt.Errorf("sslci: %w", err)
	}
	return nil
}

// Issue obtains a certificate for csr from SSLCI (issuance.Issuer.Issue).
func (iss *Issuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	return iss.engine.Issue(ctx, csr)
}

// keyPolicyOf is what the policy's certmagic config asks of a key: its
// key_type (Caddy's key source is a StandardKeyGenerator; "" is certmagic's
// default, p256) and must_staple.
func keyPolicyOf(cfg *certmagic.Config) issuance.KeyPolicy {
	policy := issuance.KeyPolicy{MustStaple: cfg.MustStaple}
	if kg, ok := cfg.KeySource.(certmagic.StandardKeyGenerator); ok {
		policy.KeyType = string(kg.KeyType)
		if policy.KeyType == "" {
			policy.KeyType = string(certmagic.P256)
		}
	}
	return policy
}
