package sslcitest

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
)

// The documentation describes the verification as ACME's: content is the key
// authorization "<token>.<account key thumbprint>". The simulator has an
// ECDSA P-256 account key for that thumbprint, as an ACME client would.

// jwkThumbprint is the RFC 7638 thumbprint of a P-256 key: base64url of the
// SHA-256 of its JWK with the required members in lexicographic order.
func jwkThumbprint(pub *ecdsa.PublicKey) (string, error) {
	b, err := pub.Bytes() // 0x04 || X || Y, 32 bytes each for P-256
	if err != nil {
		return "", err
	}
	if len(b) != 65 {
		return "", errors.New("sslcitest: account key is not P-256")
	}
	enc := base64.RawURLEncoding.EncodeToString
	jwk := `{"crv":"P-256","kty":"EC","x":"` + enc(b[1:33]) + `","y":"` + enc(b[33:]) + `"}`
	sum := sha256.Sum256([]byte(jwk))
	return enc(sum[:]), nil
}

// dnsValue is the TXT record value for a key authorization, as in ACME
// dns-01 (RFC 8555 section 8.4).
func dnsValue(keyAuth string) string {
	sum := sha256.Sum256([]byte(keyAuth))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
