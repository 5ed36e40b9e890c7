package sslci

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/internal/ledger"
)

// The sweep of kept keys takes the site's issue lock: a renewal in
// progress holds it while it keeps keys in the site's folder (the previous
// key, then SSLCI's, and a key's temporary file while it is written) and
// the stored pair is still the previous, complete one. Without the lock the
// sweep deleted them mid-renewal: the renewal's write failed ("rename ...:
// no such file or directory") and certmagic waited a minute to retry.
func TestSweepOfKeptKeysWaitsForARenewal(t *testing.T) {
	const site = "sweep.test"
	files := &certmagic.FileStorage{Path: t.TempDir()}
	storage := &lockSignal{FileStorage: files, asked: make(chan string, 1)}
	key := issuerKeyFor("https://sslci.example/api")
	iss := &Issuer{issuerKey: key, ledger: &ledger.Ledger{Keys: ledger.Keys{IssuerKey: key}}, logger: zap.NewNop()}
	iss.ledger.SetStorage(storage)
	ks := &keyStorage{Storage: storage, own: storage, iss: iss, keys: iss.ledger.Keys}
	ctx := context.Background()

	// The stored pair, complete; a key kept beside it by the renewal.
	certPEM, keyPEM := testPair(t, site)
	for k, v := range map[string][]byte{ks.keys.SiteCert(site): certPEM, ks.keys.SiteKey(site): keyPEM} {
		if err := files.Store(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	_, renewalKey := testPair(t, site)
	kept := ks.keys.KeptKey(site, sha256.Sum256([]byte("the renewal's certificate")), time.Now().Add(90*24*time.Hour))
	if err := files.Store(ctx, kept, renewalKey); err != nil {
		t.Fatal(err)
	}
	lock := ledger.IssueLock(site)
	if err := files.Lock(ctx, lock); err != nil { // the renewal's
		t.Fatal(err)
	}

	done := make(chan struct{})
	go func() { defer close(done); ks.sweepKept(ctx) }()
	select {
	case got := <-storage.asked:
		if got != lock {
			t.Fatalf("the sweep asked for lock %q, want %q", got, lock)
		}
	case <-done:
		t.Fatal("the sweep ended without asking for the site's issue lock")
	case <-time.After(10 * time.Second):
		t.Fatal("the sweep did not ask for the site's issue lock")
	}
	if _, err := files.Load(ctx, kept); err != nil {
		t.Fatalf("the key a renewal in progress keeps is gone: %v", err)
	}

	// The renewal ends (say it stored nothing new): the pair is complete,
	// so the sweep deletes what is kept.
	if err := files.Unlock(ctx, lock); err != nil {
		t.Fatal(err)
	}
	<-done
	if _, err := files.Load(ctx, kept); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a kept key beside a complete pair is left once the lock is free: %v", err)
	}
}

// lockSignal is a file storage that says which lock is asked for.
type lockSignal struct {
	*certmagic.FileStorage
	asked chan string
}

func (s *lockSignal) Lock(ctx context.Context, name string) error {
	select {
	case s.asked <- name:
	default:
	}
	return s.FileStorage.Lock(ctx, name)
}

// testPair is a self-signed certificate for name and its key, in PEM.
func testPair(t *testing.T, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// A pair that matched is parsed once however often it is checked; one that
// did not is checked, and refused, every time (a repair must see it).
func TestPairMatchesRemembersMatchesOnly(t *testing.T) {
	certPEM, keyPEM := testPair(t, "memo.test")
	_, otherKey := testPair(t, "other.memo.test")
	start := pairParses.Load()
	for range 3 {
		if err := pairMatches(certPEM, keyPEM); err != nil {
			t.Fatalf("a matching pair: %v", err)
		}
	}
	for range 2 {
		if err := pairMatches(certPEM, otherKey); err == nil {
			t.Fatal("a certificate with another key matched")
		}
	}
	if n := pairParses.Load() - start; n != 1+2 {
		t.Errorf("%d parses, want 1 for the matching pair and 2 for the other", n)
	}
}

// A load that finds a site's key not its certificate's does not wait for
// the site's issue lock to repair it: certmagic's maintenance loads while
// it holds its certificate cache (which every handshake reads), and a
// peer's failing renewal holds the lock for days. Held, the set is left as
// it is and the load fails (tried again later); free, the load repairs it.
func TestRepairDoesNotWaitForTheLock(t *testing.T) {
	const site = "torn.test"
	files := &certmagic.FileStorage{Path: t.TempDir()}
	key := issuerKeyFor("https://sslci.example/api")
	iss := &Issuer{issuerKey: key, ledger: &ledger.Ledger{Keys: ledger.Keys{IssuerKey: key}}, logger: zap.NewNop()}
	iss.ledger.SetStorage(files)
	ks := &keyStorage{Storage: files, own: files, iss: iss, keys: iss.ledger.Keys}
	ctx := context.Background()
	certPEM, _ := testPair(t, site)
	_, otherKey := testPair(t, site) // a renewal's new key, its certificate not written
	for k, v := range map[string][]byte{ks.keys.SiteCert(site): certPEM, ks.keys.SiteKey(site): otherKey} {
		if err := files.Store(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	lock := ledger.IssueLockOfDir(site)
	if err := files.Lock(ctx, lock); err != nil { // the peer's failing renewal
		t.Fatal(err)
	}
	loaded := make(chan error, 1)
	go func() { _, err := ks.Load(ctx, ks.keys.SiteKey(site)); loaded <- err }()
	select {
	case err := <-loaded:
		if err == nil || !strings.Contains(err.Error(), "its issue lock is held") {
			t.Errorf("Load with the lock held: %v; want an error saying the lock is held", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Load is still waiting for the issue lock")
	}
	if data, err := files.Load(ctx, ks.keys.SiteCert(site)); err != nil || !bytes.Equal(data, certPEM) {
		t.Errorf("the certificate was changed while the lock was held: %v", err)
	}
	if err := files.Unlock(ctx, lock); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Load(ctx, ks.keys.SiteKey(site)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load with the lock free: %v; want the unusable set removed (not exist)", err)
	}
	if files.Exists(ctx, ks.keys.SiteCert(site)) {
		t.Error("the unusable set is still in storage")
	}
}
