package sslcitest_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// finalized is a successful finalize answer, parsed.
type finalized struct {
	reply
	leaf  *x509.Certificate
	inter *x509.Certificate
	key   crypto.PublicKey // of "key", nil when absent
}

func finalize(t *testing.T, s *sslcitest.Server, token string, domains []string, csr []byte) finalized {
	t.Helper()
	body := map[string]any{"action": "finalize", "domains": domains}
	if csr != nil {
		body["csr"] = string(csr)
	}
	r := do(t, s, "POST", token, body)
	wantOK(t, r)
	f := finalized{reply: r, leaf: parseCert(t, r.str("crt")), inter: parseCert(t, r.str("ca"))}
	if k := r.str("key"); k != "" {
		b, _ := pem.Decode([]byte(k))
		if b == nil || b.Type != "PRIVATE KEY" {
			t.Fatalf("key is not a PEM PRIVATE KEY: %q", k)
		}
		priv, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		f.key = priv.(crypto.Signer).Public()
	}
	return f
}

func parseCert(t *testing.T, text string) *x509.Certificate {
	t.Helper()
	b, rest := pem.Decode([]byte(text))
	if b == nil || b.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("not one PEM certificate: %q", text)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// verifyChain checks the leaf chains through the intermediate to the root
// for every name, at the simulator's time.
func verifyChain(t *testing.T, s *sslcitest.Server, f finalized, names []string, at time.Time) {
	t.Helper()
	inter := x509.NewCertPool()
	inter.AddCert(f.inter)
	for _, n := range names {
		_, err := f.leaf.Verify(x509.VerifyOptions{
			DNSName: n, Roots: s.RootPool(), Intermediates: inter, CurrentTime: at,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			t.Errorf("verify %s: %v", n, err)
		}
	}
	if f.inter.Equal(s.Root()) {
		t.Error("ca is the root; it should be the intermediate")
	}
}

func TestSANFlow(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{})
	s.SetHTTPChallengeAddr(ch.addr()) // learned late, as with Caddy
	domains := []string{"a.test", "b.test", "www.a.test"}
	for _, d := range domains {
		verifyHTTP(t, s, s.Token(), d, ch)
	}
	if n := len(s.PendingOrders(s.Token())); n != 0 {
		t.Errorf("%d orders still pending after confirmation", n)
	}

	start := time.Now()
	f := finalize(t, s, s.Token(), []string{"a.test", "b.test", "www.a.test", "A.test"}, nil)
	verifyChain(t, s, f, domains, time.Now())
	if !slices.Equal(f.leaf.DNSNames, domains) || f.leaf.Subject.CommonName != "a.test" {
		t.Errorf("leaf names %v CN %q, want %v CN a.test", f.leaf.DNSNames, f.leaf.Subject.CommonName, domains)
	}
	if life := f.leaf.NotAfter.Sub(f.leaf.NotBefore); life != 90*24*time.Hour+time.Minute {
		t.Errorf("lifetime %v", life)
	}
	if f.leaf.NotBefore.After(start) || f.leaf.SerialNumber.BitLen() > 128 || f.leaf.SerialNumber.Sign() <= 0 {
		t.Errorf("NotBefore %v serial %v", f.leaf.NotBefore, f.leaf.SerialNumber)
	}
	// documented mode: the service's key and CSR
	if f.key == nil || !f.key.(*ecdsa.PublicKey).Equal(f.leaf.PublicKey) {
		t.Error("leaf is not for the returned key")
	}
	b, _ := pem.Decode([]byte(f.str("csr")))
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || !slices.Equal(csr.DNSNames, domains) || !f.key.(*ecdsa.PublicKey).Equal(csr.PublicKey) {
		t.Errorf("csr %v names %v", err, csr.DNSNames)
	}
	d := f.body["details"].(map[string]any)
	if d["subject"].(map[string]any)["CN"] != "a.test" ||
		d["san"] != "DNS:a.test, DNS:b.test, DNS:www.a.test" ||
		d["valid_from"] != f.leaf.NotBefore.UTC().Format("2006-01-02 15:04:05") ||
		d["valid_to"] != f.leaf.NotAfter.UTC().Format("2006-01-02 15:04:05") {
		t.Errorf("details %v", d)
	}
	certs := s.Certificates(s.Token())
	if len(certs) != 1 || !slices.Equal(certs[0].Domains, domains) || !certs[0].Leaf.Equal(f.leaf) {
		t.Errorf("certificates %+v", certs)
	}
}

func TestSignCSR(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr(), SignCSR: true})
	domains := []string{"a.test", "b.test"}
	for _, d := range domains {
		verifyHTTP(t, s, s.Token(), d, ch)
	}
	key, csrPEM := newCSR(t, domains...)

	f := finalize(t, s, s.Token(), domains, csrPEM)
	if _, ok := f.body["key"]; ok {
		t.Error("key returned although the CSR was signed")
	}
	if f.str("csr") != string(csrPEM) {
		t.Error("csr is not the client's")
	}
	if !key.PublicKey.Equal(f.leaf.PublicKey) {
		t.Error("leaf is not for the CSR's key")
	}
	verifyChain(t, s, f, domains, time.Now())

	_, other := newCSR(t, "a.test", "c.test")
	wantError(t, do(t, s, "POST", s.Token(), map[string]any{"action": "finalize", "domains": domains, "csr": string(other)}), 400, "invalid parameter csr")
	wantError(t, do(t, s, "POST", s.Token(), map[string]any{"action": "finalize", "domains": domains, "csr": "junk"}), 400, "invalid parameter csr")

	// Off (the documented behaviour): the CSR is ignored.
	s.SetSignCSR(false)
	f = finalize(t, s, s.Token(), domains, csrPEM)
	if f.key == nil || key.PublicKey.Equal(f.leaf.PublicKey) || !f.key.(*ecdsa.PublicKey).Equal(f.leaf.PublicKey) {
		t.Error("with SignCSR off the leaf must be for the returned key")
	}
}

func newCSR(t *testing.T, names ...string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: names[0]}, DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestVerificationExpiry(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr()})
	verifyHTTP(t, s, s.Token(), "a.test", ch)

	s.Advance(29*24*time.Hour - time.Minute)
	f := finalize(t, s, s.Token(), []string{"a.test"}, nil)
	// issued on the simulator's clock
	simNow := time.Now().Add(29*24*time.Hour - time.Minute)
	verifyChain(t, s, f, []string{"a.test"}, simNow)
	if f.leaf.NotBefore.Before(simNow.Add(-2 * time.Minute)) {
		t.Errorf("NotBefore %v is not on the simulator's clock", f.leaf.NotBefore)
	}

	s.Advance(2 * time.Minute)
	wantError(t, do(t, s, "POST", s.Token(), map[string]any{"action": "finalize", "domains": []string{"a.test"}}), 400, "a.test is not verified", "older than")

	verifyHTTP(t, s, s.Token(), "a.test", ch)
	finalize(t, s, s.Token(), []string{"a.test"}, nil)
	s.ExpireVerifications()
	wantError(t, do(t, s, "POST", s.Token(), map[string]any{"action": "finalize", "domains": []string{"a.test"}}), 400, "not verified")
}

func TestCustomClockAndValidity(t *testing.T) {
	ch := newChallengeServer(t)
	base := time.Date(2031, 5, 13, 0, 0, 0, 0, time.UTC)
	s := newServer(t, sslcitest.Options{
		HTTPChallengeAddr: ch.addr(), Now: func() time.Time { return base },
		Validity: 6 * 24 * time.Hour, VerificationWindow: time.Hour,
	})
	verifyHTTP(t, s, s.Token(), "a.test", ch)
	f := finalize(t, s, s.Token(), []string{"a.test"}, nil)
	if !f.leaf.NotAfter.Equal(base.Add(6*24*time.Hour)) || f.body["details"].(map[string]any)["valid_to"] != "2031-05-19 00:00:00" {
		t.Errorf("NotAfter %v", f.leaf.NotAfter)
	}
	verifyChain(t, s, f, []string{"a.test"}, base)
	s.Advance(time.Hour + time.Second)
	wantError(t, do(t, s, "POST", s.Token(), map[string]any{"action": "finalize", "domains": []string{"a.test"}}), 400, "not verified")
	// The serving side still works on the wall clock.
	wantOK(t, do(t, s, "GET", s.Token(), nil))
}

func TestDNSVerification(t *testing.T) {
	var mu sync.Mutex
	zone := make(map[string][]string)
	s := newServer(t, sslcitest.Options{LookupTXT: func(_ context.Context, name string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		return zone[name], nil
	}})
	r := do(t, s, "POST", s.Token(), map[string]any{"domain": "*.A.test", "method": "dns"})
	wantOK(t, r)
	v := verification(t, r)
	sum := sha256.Sum256([]byte(v["token"] + "." + s.Thumbprint()))
	if v["method"] != "dns" || v["record"] != "_acme-challenge.a.test" || v["type"] != "TXT" ||
		v["content"] != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Errorf("verification %v", v)
	}
	id := orderID(t, r)

	confirm := map[string]any{"domain": "*.a.test", "method": "dns"}
	wantError(t, do(t, s, "PUT", s.Token(), confirm), 400, "no TXT record at _acme-challenge.a.test.")
	mu.Lock()
	zone["_acme-challenge.a.test."] = []string{"something else"}
	mu.Unlock()
	wantError(t, do(t, s, "PUT", s.Token(), confirm), 400, "something else", v["content"])
	mu.Lock()
	zone["_acme-challenge.a.test."] = []string{"something else", v["content"]}
	mu.Unlock()
	// Without method the default is http: there is no such pending order.
	wantError(t, do(t, s, "PUT", s.Token(), map[string]any{"domain": "*.a.test"}), 400, "no pending http verification")
	// With order_id the order's own method is used.
	r = do(t, s, "PUT", s.Token(), map[string]any{"domain": "*.a.test", "order_id": id})
	wantOK(t, r)
	if r.str("message") != "domain verified" || orderID(t, r) != id || r.str("domain") != "*.a.test" {
		t.Errorf("confirm answer %s", r.raw)
	}
	// Confirming again is harmless.
	wantOK(t, do(t, s, "PUT", s.Token(), map[string]any{"domain": "*.a.test", "order_id": id}))

	f := finalize(t, s, s.Token(), []string{"*.a.test"}, nil)
	verifyChain(t, s, f, []string{"x.a.test"}, time.Now())
	// The wildcard does not verify the base name.
	wantError(t, do(t, s, "POST", s.Token(), map[string]any{"action": "finalize", "domains": []string{"*.a.test", "a.test"}}), 400, "a.test is not verified")
}
