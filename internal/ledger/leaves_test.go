package ledger

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"maps"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/api"
)

// withDamagedChain is leafDER in PEM, then a CERTIFICATE block that is not
// a certificate: a chain damaged after its leaf.
func withDamagedChain(leafDER []byte) []byte {
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})...)
}

// A stored chain whose certificates after the leaf do not parse is what
// certmagic loads and Caddy serves (tls.X509KeyPair parses the leaf
// alone): the ledger takes it for stored, and neither the sweep nor an
// issuance's reconciliation deletes it at SSLCI. Before, ParseLeaf parsed
// the whole chain, ReadLeaf took the certificate for one not stored, and
// both deleted it.
func TestDamagedChainIsStillStored(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"a.test"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	chain := withDamagedChain(der)
	if _, err := tls.X509KeyPair(chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		t.Fatalf("certmagic's load (tls.X509KeyPair) refuses a chain damaged after its leaf (%v): this test's premise is gone", err)
	}
	if leaf, err := ParseLeaf(chain); err != nil || !slices.Equal(leaf.Raw, der) {
		t.Fatalf("ParseLeaf of a chain damaged after its leaf: %v, %v", leaf, err)
	}
	if _, err := ParseLeaf([]byte("no PEM")); err == nil {
		t.Error("ParseLeaf of no PEM at all: no error")
	}

	for _, pass := range passes {
		t.Run(pass.name, func(t *testing.T) {
			e := newEnv(t)
			leaf := e.obtain(false, "a.test")
			e.store([]string{"a.test"}, withDamagedChain(leaf.Raw))
			keepsCertificates(t, e, pass.name, pass.run)
		})
	}
}

// The passes that delete at SSLCI what the ledger proves ours and unstored.
var passes = []struct {
	name string
	run  func(e *env) error
}{
	{"sweep", func(e *env) error { return e.ledger.Sweep(context.Background()) }},
	{"reconciliation", func(e *env) error {
		_, err := e.ledger.Reconcile(context.Background(), ForNames([]string{"a.test"}), nil, api.MethodDNS)
		return err
	}},
}

// keepsCertificates runs pass and fails if it deleted a certificate at
// SSLCI.
func keepsCertificates(t *testing.T, e *env, name string, pass func(*env) error) {
	t.Helper()
	before := e.certificates()
	if len(before["a.test"]) != 1 {
		t.Fatalf("SSLCI lists %v", before)
	}
	if err := pass(e); err != nil {
		t.Fatal(err)
	}
	if after := e.certificates(); !maps.EqualFunc(after, before, slices.Equal) {
		t.Errorf("the %s deleted a stored certificate at SSLCI: %v before, %v after", name, before, after)
	}
}

// A stored certificate that does not parse at all (its leaf damaged) is
// no certificate Caddy can serve, but which one it was is unknown: an
// error reading storage, not an absence. The passes leave SSLCI's
// certificates of its names alone, and their records too, until the file
// is replaced. Before, it was taken for none, and its certificate at SSLCI
// (the one intact copy) was deleted as ours and unstored.
func TestDamagedLeafLeavesItsNamesAlone(t *testing.T) {
	for _, pass := range passes {
		t.Run(pass.name, func(t *testing.T) {
			e := newEnv(t)
			leaf := e.obtain(false, "a.test")
			damaged := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw[:len(leaf.Raw)/2]})
			e.store([]string{"a.test"}, damaged)
			keepsCertificates(t, e, pass.name, pass.run)
			_, certs, err := e.ledger.Records(context.Background())
			if err != nil || len(certs) != 1 {
				t.Errorf("the %s left %d finalize records (%v), want the one", pass.name, len(certs), err)
			}
			// `caddy sslci list` says why, and prune leaves it.
			marked, err := e.ledger.Mark(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if c := marked.Certificates; len(c) != 1 || c[0].Mark != MarkForeign || !strings.Contains(c[0].Note, "does not parse") || Prunable(c[0].Mark) {
				t.Errorf("caddy sslci list marks it %+v", c)
			}

			// Once certmagic replaces it, the record is settled as usual.
			e.store([]string{"a.test"}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))
			if err := pass.run(e); err != nil {
				t.Fatal(err)
			}
			if after := e.certificates(); len(after["a.test"]) != 1 {
				t.Errorf("with the certificate readable again, SSLCI lists %v", after)
			}
		})
	}
}
