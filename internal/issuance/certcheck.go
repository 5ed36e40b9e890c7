package issuance

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/ledger"
)

// This file checks a finalize answer before certmagic gets it, against the
// trusted roots it also loads. certmagic stores IssuedCertificate.Certificate
// as given and later loads it with tls.X509KeyPair next to the private key it
// made for the CSR: so the chain must be PEM, leaf first, and a certificate
// for a key SSLCI generated is usable only once that key is stored in place
// of certmagic's (serverkey).

// Checked is a finalize answer that passed CheckCertificate.
type Checked struct {
	Leaf     *x509.Certificate
	ChainPEM []byte // leaf, then the chain from "ca"
	// ServerKey is SSLCI's private key (PEM) when the certificate is for it
	// rather than for the CSR's key.
	ServerKey []byte
}

// CheckCertificate refuses anything Caddy could not serve as asked: a leaf
// that does not parse, misses a requested name, is not valid now, does not
// chain through "ca" to one of roots (nil: the system's), or is for a key
// that is neither the CSR's nor the one SSLCI returned.
func CheckCertificate(cert *api.Certificate, names []string, csr *x509.CertificateRequest, roots *x509.CertPool, now time.Time) (*Checked, error) {
	certs, err := ledger.ParseCertificates(cert.CertificatePEM)
	if err != nil {
		return nil, fmt.Errorf("field crt: %w", err)
	}
	if len(certs) == 0 {
		return nil, errors.New("field crt: no certificate")
	}
	leaf := certs[0]
	chain, err := ledger.ParseCertificates(cert.CAPEM)
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
	if err := verifyChain(leaf, chain, roots, now); err != nil {
		return nil, err
	}

	out := &Checked{Leaf: leaf}
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
		if out.ServerKey, err = certmagic.PEMEncodePrivateKey(key); err != nil {
			return nil, fmt.Errorf("field key: %w", err)
		}
	default:
		return nil, errors.New("the certificate is not for the CSR's key, and SSLCI returned no key")
	}

	var buf bytes.Buffer
	for _, c := range append([]*x509.Certificate{leaf}, chain...) {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	out.ChainPEM = buf.Bytes()
	return out, nil
}

// verifyChain checks that leaf chains through chain, whose last
// certificate (usually an intermediate) stands in for the root, and then
// that the chain ends at one of roots (nil: the system's): an answer's own
// idea of its root proves nothing.
//
// One verification usually says both: a chain to a trusted root that
// passes through top holds a path from leaf to top through the returned
// certificates (Verify puts only intermediates between the leaf and a
// root), checked with the same time and key usage. Only when none does
// (an error, or a trusted path that avoids the returned chain, as through
// a cross-signed root) is the path to top checked on its own, as it was
// for every certificate: that is one signature check in three saved.
func verifyChain(leaf *x509.Certificate, chain []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	top := chain[len(chain)-1]
	intermediates := x509.NewCertPool()
	for _, c := range chain {
		intermediates.AddCert(c)
	}
	opts := x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	chains, trustErr := leaf.Verify(opts)
	for _, c := range chains {
		if slices.ContainsFunc(c[1:], top.Equal) {
			return nil
		}
	}
	own := x509.NewCertPool()
	own.AddCert(top)
	opts.Roots = own
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("the certificate does not chain through the returned ca: %w", err)
	}
	if unknown := (x509.UnknownAuthorityError{}); errors.As(trustErr, &unknown) {
		what := "the certificate's chain ends at " + describeCA(top) + ", which is not a trusted root CA"
		if top.Equal(leaf) {
			what = "the certificate is self-signed (" + describeCA(top) + "), not issued by a trusted root CA"
		}
		return fmt.Errorf("%s; if it is the CA you expect, add its root certificate with trusted_roots", what)
	}
	if trustErr != nil {
		return fmt.Errorf("the certificate does not chain to a trusted root: %w", trustErr)
	}
	return nil
}

// describeCA names a CA certificate by its subject's common name and
// organization, and by its issuer's when it is not self-issued.
func describeCA(c *x509.Certificate) string {
	s := describeName(c.Subject)
	if !bytes.Equal(c.RawIssuer, c.RawSubject) {
		s += " (issued by " + describeName(c.Issuer) + ")"
	}
	return s
}

func describeName(n pkix.Name) string {
	s := strconv.Quote(n.CommonName)
	if len(n.Organization) > 0 {
		s += ", organization " + strconv.Quote(strings.Join(n.Organization, ", "))
	}
	return s
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
