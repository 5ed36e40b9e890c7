package issuance

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
	"github.com/sslci/caddy-sslci/sslcitest"
)

// checkCertificate is pure: each way a finalize answer can be unusable is
// refused with an error that says which, and the usable ones (for the CSR's
// key, or for the key SSLCI returned, chaining to a trusted root) come back
// as certmagic stores them.
func TestCheckCertificate(t *testing.T) {
	now := time.Now()
	csr, csrKey := sslcitest.NewCSR(t, "a.test", "b.test")
	serverKey := newKey(t)
	serverKeyPEM, err := certmagic.PEMEncodePrivateKey(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, otherCA := newTestCA(t, nil, "test root"), newTestCA(t, nil, "other root", "Elsewhere Inc")
	otherInter := newTestCA(t, otherCA, "other intermediate", "Elsewhere Inc")
	trusted := poolOf(ca)
	names := []string{"a.test", "b.test"}
	valid := func(key crypto.Signer) []byte {
		return ca.issue(t, key.Public(), names, now.Add(-time.Hour), now.Add(time.Hour))
	}
	fromOther := otherInter.issue(t, csrKey.Public(), names, now.Add(-time.Hour), now.Add(time.Hour))
	selfSigned := selfSignedLeaf(t, csrKey, names, now)

	cases := []struct {
		name          string
		cert          api.Certificate
		roots         *x509.CertPool // nil: trusted
		system        bool           // nil roots for real: the system's
		wantErr       []string       // empty: accepted
		wantServerKey bool
	}{
		{name: "no crt", cert: api.Certificate{CAPEM: ca.pem}, wantErr: []string{"field crt: no certificate"}},
		{name: "crt not PEM", cert: api.Certificate{CertificatePEM: []byte("not a certificate"), CAPEM: ca.pem}, wantErr: []string{"field crt: no PEM certificate found"}},
		{name: "crt PEM of no certificate", cert: api.Certificate{CertificatePEM: pemBlock("CERTIFICATE", []byte("garbage")), CAPEM: ca.pem}, wantErr: []string{"field crt: x509"}},
		{name: "ca broken", cert: api.Certificate{CertificatePEM: valid(csrKey), CAPEM: pemBlock("CERTIFICATE", []byte("garbage"))}, wantErr: []string{"field ca: x509"}},
		{name: "a name missing", cert: api.Certificate{CertificatePEM: ca.issue(t, csrKey.Public(), names[:1], now.Add(-time.Hour), now.Add(time.Hour)), CAPEM: ca.pem}, wantErr: []string{"does not cover b.test"}},
		{name: "not yet valid", cert: api.Certificate{CertificatePEM: ca.issue(t, csrKey.Public(), names, now.Add(time.Hour), now.Add(2*time.Hour)), CAPEM: ca.pem}, wantErr: []string{"not valid now"}},
		{name: "expired", cert: api.Certificate{CertificatePEM: ca.issue(t, csrKey.Public(), names, now.Add(-2*time.Hour), now.Add(-time.Hour)), CAPEM: ca.pem}, wantErr: []string{"not valid now"}},
		{name: "no chain", cert: api.Certificate{CertificatePEM: valid(csrKey)}, wantErr: []string{"no issuing chain"}},
		{name: "chain of another CA", cert: api.Certificate{CertificatePEM: valid(csrKey), CAPEM: otherCA.pem}, wantErr: []string{"does not chain through the returned ca"}},
		{name: "self-signed, as its own ca", cert: api.Certificate{CertificatePEM: selfSigned, CAPEM: selfSigned},
			wantErr: []string{`the certificate is self-signed ("a.test")`, "add its root certificate with trusted_roots"}},
		{name: "unknown root, sent", cert: api.Certificate{CertificatePEM: fromOther, CAPEM: cat(otherInter.pem, otherCA.pem)},
			wantErr: []string{`chain ends at "other root", organization "Elsewhere Inc", which is not a trusted root CA`, "trusted_roots"}},
		{name: "unknown root, not sent", cert: api.Certificate{CertificatePEM: fromOther, CAPEM: otherInter.pem},
			wantErr: []string{`chain ends at "other intermediate", organization "Elsewhere Inc" (issued by "other root", organization "Elsewhere Inc")`, "trusted_roots"}},
		{name: "the system's roots only", cert: api.Certificate{CertificatePEM: valid(csrKey), CAPEM: ca.pem}, system: true,
			wantErr: []string{`chain ends at "test root"`, "trusted_roots"}},
		{name: "another key, none returned", cert: api.Certificate{CertificatePEM: valid(newKey(t)), CAPEM: ca.pem}, wantErr: []string{"not for the CSR's key, and SSLCI returned no key"}},
		{name: "another key than the one returned", cert: api.Certificate{CertificatePEM: valid(newKey(t)), CAPEM: ca.pem, PrivateKeyPEM: serverKeyPEM}, wantErr: []string{"neither the CSR's key nor the key SSLCI returned"}},
		{name: "returned key broken", cert: api.Certificate{CertificatePEM: valid(serverKey), CAPEM: ca.pem, PrivateKeyPEM: []byte("not a key")}, wantErr: []string{"field key"}},
		{name: "for the CSR's key", cert: api.Certificate{CertificatePEM: valid(csrKey), CAPEM: ca.pem}},
		{name: "for the CSR's key, chain in crt", cert: api.Certificate{CertificatePEM: cat(valid(csrKey), ca.pem)}},
		{name: "for the key SSLCI returned", cert: api.Certificate{CertificatePEM: valid(serverKey), CAPEM: ca.pem, PrivateKeyPEM: serverKeyPEM}, wantServerKey: true},
		// otherCA stands for a root of the system's pool: the answer
		// need not send it, nor be trusted through trusted_roots.
		{name: "root in the pool, not sent", cert: api.Certificate{CertificatePEM: fromOther, CAPEM: otherInter.pem}, roots: poolOf(otherCA)},
		{name: "root in the pool, sent", cert: api.Certificate{CertificatePEM: fromOther, CAPEM: cat(otherInter.pem, otherCA.pem)}, roots: poolOf(otherCA)},
		// The returned chain goes to an untrusted root through a
		// cross-signed copy of the trusted one: the trusted path avoids it,
		// and the path through it is checked on its own.
		{name: "cross-signed chain, trusted through its other root", cert: api.Certificate{CertificatePEM: valid(csrKey), CAPEM: cat(crossSigned(t, ca, otherCA), otherCA.pem)}},
		{name: "cross-signed chain that the leaf is not under", cert: api.Certificate{CertificatePEM: valid(csrKey), CAPEM: cat(crossSigned(t, otherInter, otherCA), otherCA.pem)},
			wantErr: []string{"does not chain through the returned ca"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			roots := tc.roots
			if roots == nil && !tc.system {
				roots = trusted
			}
			got, err := CheckCertificate(&tc.cert, names, csr, roots, now)
			if len(tc.wantErr) > 0 {
				for _, want := range tc.wantErr {
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Errorf("error = %v, want one saying %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got.ServerKey != nil) != tc.wantServerKey {
				t.Errorf("server key returned: %t, want %t", got.ServerKey != nil, tc.wantServerKey)
			}
			if tc.wantServerKey && !bytes.Equal(got.ServerKey, serverKeyPEM) {
				t.Error("the server key is not the one SSLCI returned, in certmagic's PEM form")
			}
			// What certmagic stores: leaf then chain as returned, PEM.
			if want := cat(tc.cert.CertificatePEM, tc.cert.CAPEM); !bytes.Equal(got.ChainPEM, want) {
				t.Errorf("stored chain:\n%s\nwant the leaf then the returned chain:\n%s", got.ChainPEM, want)
			}
		})
	}
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// testCA is a CA that issues leaf certificates: a self-signed root, or an
// intermediate of its parent.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

func newTestCA(t testing.TB, parent *testCA, cn string, org ...string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn, Organization: org},
		NotBefore:             time.Now().Add(-24 * time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pemBlock("CERTIFICATE", der)}
}

// crossSigned returns a PEM certificate for ca's subject and key, issued by
// another CA.
func crossSigned(t testing.TB, ca, by *testCA) []byte {
	t.Helper()
	tmpl := *ca.cert
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, by.cert, ca.key.Public(), by.key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der)
}

// selfSignedLeaf returns a PEM server certificate for key and names, named
// after the first, that is its own issuer.
func selfSignedLeaf(t testing.TB, key crypto.Signer, names []string, now time.Time) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der)
}

func poolOf(cas ...*testCA) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca.cert)
	}
	return pool
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

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

// The check of a finalize answer, per certificate: a leaf under an
// intermediate under a trusted root, as SSLCI's are (the simulator's too).
func BenchmarkCheckCertificate(b *testing.B) {
	now := time.Now()
	csr, csrKey := sslcitest.NewCSR(b, "a.test")
	root := newTestCA(b, nil, "bench root")
	inter := newTestCA(b, root, "bench intermediate")
	cert := &api.Certificate{CertificatePEM: inter.issue(b, csrKey.Public(), []string{"a.test"}, now.Add(-time.Hour), now.Add(time.Hour)), CAPEM: inter.pem}
	roots := poolOf(root)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CheckCertificate(cert, []string{"a.test"}, csr, roots, now); err != nil {
			b.Fatal(err)
		}
	}
}
