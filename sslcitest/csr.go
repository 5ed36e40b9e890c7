package sslcitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"slices"
	"strings"
)

// newKeyAndCSR is what the documented service returns: a fresh key
// (ECDSA P-256, PKCS#8 "PRIVATE KEY" PEM as in the example) and a CSR for
// the domains.
func newKeyAndCSR(domains []string) (key crypto.Signer, keyPEM, csrPEM string, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, "", "", err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: domains[0]},
		DNSNames: domains,
	}, k)
	if err != nil {
		return nil, "", "", err
	}
	return k,
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		nil
}

// csrPublicKey checks a client's CSR (PEM) and returns its key. Its names
// (DNS SANs, and the CN if any) must be exactly the domains: the certificate
// is issued for the verified domains, so a CSR asking for others is an error
// rather than silently overridden.
func csrPublicKey(text string, domains []string) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(text))
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, badRequest("invalid parameter csr: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, badRequest("invalid parameter csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, badRequest("invalid parameter csr: bad signature: %v", err)
	}
	if len(csr.IPAddresses)+len(csr.EmailAddresses)+len(csr.URIs) > 0 {
		return nil, badRequest("invalid parameter csr: only DNS names are accepted")
	}
	if k, ok := csr.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < 2048 {
		return nil, badRequest("invalid parameter csr: RSA key shorter than 2048 bits")
	}
	names := csr.DNSNames
	if cn := csr.Subject.CommonName; cn != "" {
		names = append(names, cn)
	}
	for i, n := range names {
		names[i] = strings.ToLower(n)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	want := slices.Sorted(slices.Values(domains))
	if !slices.Equal(names, want) {
		return nil, badRequest("invalid parameter csr: it names %q, domains are %q", names, want)
	}
	return csr.PublicKey, nil
}
