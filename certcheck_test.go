package sslci

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/api"
)

// checkCertificate is pure: each way a finalize answer can be unusable is
// refused with an error that says which, and the two usable ones (for the
// CSR's key, or for the key SSLCI returned) come back as certmagic stores
// them.
func TestCheckCertificate(t *testing.T) {
	now := time.Now()
	csr, csrKey := newCSR(t, "a.test", "b.test")
	serverKey := newKey(t)
	serverKeyPEM, err := certmagic.PEMEncodePrivateKey(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, otherCA := newTestCA(t), newTestCA(t)
	names := []string{"a.test", "b.test"}
	valid := func(key crypto.Signer) []byte {
		return ca.issue(t, key.Public(), names, now.Add(-time.Hour), now.Add(time.Hour))
	}

	cases := []struct {
		name          string
		cert          api.Certificate
		wantErr       string // empty: accepted
		wantServerKey bool
	}{
		{name: "no crt", cert: api.Certificate{CAPEM: ca.pem}, wantErr: "field crt: no certificate"},
		{name: "crt not PEM", cert: api.Certificate{CertificatePEM: []byte("not a certificate"), CAPEM: ca.pem}, wantErr: "field crt: no PEM certificate found"},
		{name: "crt PEM of no certificate", cert: api.Certificate{CertificatePEM: pemBlock("CERTIFICATE", []byte("garbage")), CAPEM: ca.pem}, wantErr: "field crt: x509"},
		{name: "ca broken", cert: api.Certificate{CertificatePEM: valid(csrKey), CAPEM: pemBlock("CERTIFICATE", []byte("garbage"))}, wantErr: "field ca: x509"},
		{name: "a name missing", cert: api.Certificate{CertificatePEM: ca.issue(t, csrKey.Public(), names[:1], now.Add(-time.Hour), now.Add(time.Hour)), CAPEM: ca.pem}, wantErr: "does not cover b.test"},
		{name: "not yet valid", cert: api.Certificate{CertificatePEM: ca.issue(t, csrKey.Public(), names, now.Add(time.Hour), now.Add(2*time.Hour)), CAPEM: ca.pem}, wantErr: "not valid now"},
		{name: "expired", cert: api.Certificate{CertificatePEM: ca.issue(t, csrKey.Public(), names, now.Add(-2*time.Hour), now.Add(-time.Hour)), CAPEM: ca.pem}, wantErr: "not valid now"},
		{name: "no chain", cert: api.Certificate{CertificatePEM: valid(csrKey)}, wantErr: "no issuing chain"},
		{name: "chain of another CA", cert: api.Certificate{CertificatePEM: valid(csrKey), CAPEM: otherCA.pem}, wantErr: "does not chain through the returned ca"},
		{name: "another key, none returned", cert: api.Certificate{CertificatePEM: valid(newKey(t)), CAPEM: ca.pem}, wantErr: "not for the CSR's key, and SSLCI returned no key"},
		{name: "another key than the one returned", cert: api.Certificate{CertificatePEM: valid(newKey(t)), CAPEM: ca.pem, PrivateKeyPEM: serverKeyPEM}, wantErr: "neither the CSR's key nor the key SSLCI returned"},
		{name: "returned key broken", cert: api.Certificate{CertificatePEM: valid(serverKey), CAPEM: ca.pem, PrivateKeyPEM: []byte("not a key")}, wantErr: "field key"},
		{name: "for the CSR's key", cert: api.Certificate{CertificatePEM: valid(csrKey), CAPEM: ca.pem}},
		{name: "for the CSR's key, chain in crt", cert: api.Certificate{CertificatePEM: append(valid(csrKey), ca.pem...)}},
		{name: "for the key SSLCI returned", cert: api.Certificate{CertificatePEM: valid(serverKey), CAPEM: ca.pem, PrivateKeyPEM: serverKeyPEM}, wantServerKey: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := checkCertificate(&tc.cert, names, csr, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got.serverKey != nil) != tc.wantServerKey {
				t.Errorf("server key returned: %t, want %t", got.serverKey != nil, tc.wantServerKey)
			}
			if tc.wantServerKey && !bytes.Equal(got.serverKey, serverKeyPEM) {
				t.Error("the server key is not the one SSLCI returned, in certmagic's PEM form")
			}
			// What certmagic stores: leaf then chain, PEM.
			chain, err := parseCertificates(got.chainPEM)
			if err != nil || len(chain) != 2 || !chain[0].Equal(got.leaf) || !bytes.Equal(chain[1].Raw, ca.cert.Raw) {
				t.Errorf("chain = %d certificates (%v), want the leaf then the CA", len(chain), err)
			}
		})
	}
}

// newCSR makes a CSR for names with a fresh P-256 key, as certmagic does.
func newCSR(t testing.TB, names ...string) (*x509.CertificateRequest, crypto.Signer) {
	t.Helper()
	key := newKey(t)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// testCA is a self-signed root that issues leaf certificates.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test root"},
		NotBefore:             time.Now().Add(-24 * time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pemBlock("CERTIFICATE", der)}
}

// issue returns a PEM server certificate for pub and names.
func (ca *testCA) issue(t testing.TB, pub crypto.PublicKey, names []string, notBefore, notAfter time.Time) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		DNSNames:     names,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
