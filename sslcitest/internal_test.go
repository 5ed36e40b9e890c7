package sslcitest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"testing"
)

// The P-256 base point (private key 1), against the thumbprint that
// go-jose's JSONWebKey.Thumbprint(crypto.SHA256) computes for it.
func TestJWKThumbprint(t *testing.T) {
	p := elliptic.P256().Params()
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, p.Gx.Bytes()...), p.Gy.Bytes()...))
	if err != nil {
		t.Fatal(err)
	}
	got, err := jwkThumbprint(pub)
	if want := "xx0BcA-wMohw8atYDJOe6peGModklG2wRHBlXHMvl0M"; err != nil || got != want {
		t.Errorf("thumbprint %q %v, want %q", got, err, want)
	}
}

func TestNormalizeDomain(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM":     "example.com",
		" a.test ":        "a.test",
		"*.A.test":        "*.a.test",
		"xn--bcher-kva.x": "xn--bcher-kva.x",
		"a-b.c1":          "a-b.c1",
	} {
		if got, err := normalizeDomain(in); got != want || err != nil {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a", "a.test.", "a..test", "-a.test", "a-.test", "*.test", "a.*.test", "**.a.test",
		"1.2.3.4", "[::1]", "a.123", "bücher.de", "a.test,b.test", "a.test b.test", "a/b.test",
		string(make([]byte, 64)) + ".test"} {
		if got, err := normalizeDomain(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}
