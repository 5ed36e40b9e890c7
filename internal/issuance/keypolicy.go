package issuance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// KeyPolicy is what the automation policy asks of a certificate's key,
// which SSLCI ignores when it generates the key itself.
type KeyPolicy struct {
	// KeyType is the policy's key_type, in certmagic's names (p256,
	// rsa2048, ...). Empty: unknown (a key source of another kind), and
	// the CSR's key, which that source made, stands for it.
	KeyType string
	// MustStaple: the policy asks for the OCSP must-staple extension.
	MustStaple bool
}

// tlsFeatureOID is the TLS feature extension (RFC 7633) that carries
// must-staple, as certmagic puts it in the CSR.
var tlsFeatureOID = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 24}

// warnKeyPolicy logs, once for the certificate leaf for SSLCI's key, how
// that key differs from the policy's: its type, and must-staple. Issue
// calls it once per certificate it returns; require_csr_key is the way to
// refuse such certificates.
func (r *run) warnKeyPolicy(csr *x509.CertificateRequest, leaf *x509.Certificate) {
	policy := r.iss.KeyPolicy
	if policy.KeyType == "" {
		policy.KeyType = keyTypeName(csr.PublicKey)
	}
	sslciType := keyTypeName(leaf.PublicKey)
	var diffs []string
	if sslciType != policy.KeyType {
		diffs = append(diffs, fmt.Sprintf("SSLCI's key is %s but the policy's key_type is %s", sslciType, policy.KeyType))
	}
	staples := slices.ContainsFunc(leaf.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(tlsFeatureOID) })
	if policy.MustStaple && !staples {
		diffs = append(diffs, "the policy asks for must_staple but SSLCI's certificate lacks it")
	}
	if len(diffs) == 0 {
		return
	}
	r.logger.Warn("SSLCI's key does not match the policy: "+strings.Join(diffs, "; ")+
		" (the certificate is used with SSLCI's key; require_csr_key refuses such certificates)",
		zap.String("sslci_key_type", sslciType), zap.String("policy_key_type", policy.KeyType),
		zap.Bool("must_staple", policy.MustStaple), zap.Bool("certificate_must_staple", staples),
		zap.String("serial", leaf.SerialNumber.Text(16)))
}

// keyTypeName names a public key as certmagic's key_type does (p256,
// p384, rsa2048, rsa4096, ed25519), or else by its kind and size.
func keyTypeName(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if name := k.Curve.Params().Name; strings.HasPrefix(name, "P-") {
			return "p" + strings.TrimPrefix(name, "P-")
		}
		return "ecdsa " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	case ed25519.PublicKey:
		return "ed25519"
	}
	return fmt.Sprintf("%T", pub)
}
