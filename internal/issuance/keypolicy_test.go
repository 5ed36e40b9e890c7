package issuance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Keys are named as certmagic's key_type names them; a policy is compared
// with SSLCI's key by type and must-staple, and when its key source is
// not certmagic's standard one, the CSR's key stands for its key_type.
func TestKeyPolicy(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa4096 := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 4095), E: 65537} // its size is all that is named
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		key  crypto.PublicKey
		want string
	}{{p256.Public(), "p256"}, {p384.Public(), "p384"}, {rsa4096, "rsa4096"}, {ed, "ed25519"}} {
		if got := keyTypeName(tc.key); got != tc.want {
			t.Errorf("keyTypeName = %q, want %q", got, tc.want)
		}
	}

	staple := pkix.Extension{Id: tlsFeatureOID, Value: []byte{0x30, 0x03, 0x02, 0x01, 0x05}}
	leafP256 := &x509.Certificate{PublicKey: p256.Public(), SerialNumber: big.NewInt(0xabc)}
	leafStapled := &x509.Certificate{PublicKey: p256.Public(), SerialNumber: big.NewInt(0xabd), Extensions: []pkix.Extension{staple}}
	csrP384 := &x509.CertificateRequest{PublicKey: p384.Public()}
	csrP256 := &x509.CertificateRequest{PublicKey: p256.Public()}
	cases := []struct {
		name   string
		policy KeyPolicy
		csr    *x509.CertificateRequest
		leaf   *x509.Certificate
		want   string // the warning; "" none
	}{
		{"same type", KeyPolicy{KeyType: "p256"}, csrP256, leafP256, ""},
		{"other type", KeyPolicy{KeyType: "rsa4096"}, csrP256, leafP256,
			"SSLCI's key does not match the policy: SSLCI's key is p256 but the policy's key_type is rsa4096 (the certificate is used with SSLCI's key; require_csr_key refuses such certificates)"},
		{"type from the CSR", KeyPolicy{}, csrP384, leafP256,
			"SSLCI's key does not match the policy: SSLCI's key is p256 but the policy's key_type is p384 (the certificate is used with SSLCI's key; require_csr_key refuses such certificates)"},
		{"must-staple missing", KeyPolicy{KeyType: "p256", MustStaple: true}, csrP256, leafP256,
			"SSLCI's key does not match the policy: the policy asks for must_staple but SSLCI's certificate lacks it (the certificate is used with SSLCI's key; require_csr_key refuses such certificates)"},
		{"must-staple present", KeyPolicy{KeyType: "p256", MustStaple: true}, csrP256, leafStapled, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			r := &run{iss: &Issuer{KeyPolicy: tc.policy}, logger: zap.New(core)}
			r.warnKeyPolicy(tc.csr, tc.leaf)
			var got string
			if entries := logs.All(); len(entries) == 1 && entries[0].Level == zapcore.WarnLevel {
				got = entries[0].Message
			} else if len(entries) > 1 {
				t.Fatalf("%d lines logged", len(entries))
			}
			if got != tc.want {
				t.Errorf("warning %q, want %q", got, tc.want)
			}
		})
	}
}
