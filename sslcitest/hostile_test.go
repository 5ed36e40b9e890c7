package sslcitest_test

import (
	"crypto"
	"crypto/x509"
	"errors"
	"slices"
	"testing"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// TestHostileCertificates: self-signed and foreign-root certificates look
// right (names, key) and fail only to verify against the simulator's root.
func TestHostileCertificates(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr()})
	names := []string{"a.test", "b.test"}
	for _, d := range names {
		verifyHTTP(t, s, s.Token(), d, ch)
	}
	verify := func(f finalized) error {
		inter := x509.NewCertPool()
		inter.AddCert(f.inter)
		_, err := f.leaf.Verify(x509.VerifyOptions{Roots: s.RootPool(), Intermediates: inter, DNSName: "b.test"})
		return err
	}
	looksRight := func(f finalized) {
		t.Helper()
		if !slices.Equal(f.leaf.DNSNames, names) || f.key == nil || !f.key.(interface{ Equal(crypto.PublicKey) bool }).Equal(f.leaf.PublicKey) {
			t.Errorf("names %v, or not for the returned key", f.leaf.DNSNames)
		}
		var unknown x509.UnknownAuthorityError
		if err := verify(f); !errors.As(err, &unknown) {
			t.Errorf("verified against the simulator's root: %v", err)
		}
	}

	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultSelfSigned, 1)
	f := finalize(t, s, s.Token(), names, nil)
	looksRight(f)
	if f.str("ca") != f.str("crt") || f.leaf.Issuer.String() != f.leaf.Subject.String() || f.leaf.CheckSignature(f.leaf.SignatureAlgorithm, f.leaf.RawTBSCertificate, f.leaf.Signature) != nil {
		t.Errorf("not self-signed: issuer %v, ca %q", f.leaf.Issuer, f.str("ca"))
	}

	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultUnknownRoot, 1)
	f = finalize(t, s, s.Token(), names, nil)
	looksRight(f)
	if err := f.leaf.CheckSignatureFrom(f.inter); err != nil || !f.inter.IsCA {
		t.Errorf("leaf does not chain to the intermediate returned: %v", err)
	}
	if f.inter.CheckSignatureFrom(s.Root()) == nil || f.inter.Issuer.String() == s.Root().Subject.String() {
		t.Errorf("the intermediate %v is the simulator's", f.inter.Subject)
	}

	// Untouched: the next one verifies.
	if err := verify(finalize(t, s, s.Token(), names, nil)); err != nil {
		t.Error(err)
	}
	if e := lastRequest(t, s); e.Fault != sslcitest.FaultNone {
		t.Errorf("logged %+v", e)
	}
	if n := len(s.Certificates(s.Token())); n != 3 {
		t.Errorf("%d certificates recorded", n)
	}

	// With the client's CSR the simulator has no private key to self-sign.
	s.SetSignCSR(true)
	key, csr := newCSR(t, names...)
	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultSelfSigned, 1)
	f = finalize(t, s, s.Token(), names, csr)
	if !key.PublicKey.Equal(f.leaf.PublicKey) || f.str("ca") != f.str("crt") || f.leaf.Issuer.String() != f.leaf.Subject.String() {
		t.Errorf("self-signed for the CSR: issuer %v", f.leaf.Issuer)
	}
}
