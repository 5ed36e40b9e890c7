package sslci

// SSLCI's documented finalize returns a certificate for a private key SSLCI
// generated, while certmagic (v0.25.6) stores the key it generated for the
// CSR: saveCertResource (crypto.go) hands storeTx (storage.go) three writes,
// in this order, to the config's Storage:
//
//	certmagic.StorageKeys.SitePrivateKey(issuerKey, name)  the CSR's key
//	certmagic.StorageKeys.SiteCert(issuerKey, name)        the certificate
//	certmagic.StorageKeys.SiteMeta(issuerKey, name)        the metadata
//
// and only then emits cert_obtained. Swapping the key at that event left a
// window in which storage held SSLCI's certificate beside Caddy's key, which
// certmagic refuses for good ("unusable certificate") after a crash. So
// instead SetConfig wraps the config's Storage in keyStorage:
//
//   - Issue makes SSLCI's key known, in memory, by the SHA-256 of the
//     CSR's public key, before returning (rememberServerKey).
//   - Store of SitePrivateKey for this issuer: the key of the valid pair it
//     overwrites, if any (a renewal), is kept first (keptkeys.go); if the key
//     certmagic writes is a CSR key whose certificate is for SSLCI's key,
//     SSLCI's key is written instead. Storage never holds SSLCI's
//     certificate beside Caddy's key; a crash before the certificate is
//     written leaves a key with no certificate (first issuance: certmagic
//     obtains again) or beside the previous certificate (renewal: repaired
//     as below, with the kept previous key).
//   - Store of SiteMeta: the set is complete; the site's kept keys are
//     deleted. A Delete of the certificate or key while a renewal is being
//     written is certmagic rolling back a failed write: the previous
//     certificate and key are put back instead.
//   - Load of SitePrivateKey for this issuer checks the key against the
//     stored certificate as certmagic will (tls.X509KeyPair). If they do not
//     match, whatever the cause, it takes certmagic's issue lock for the name
//     (so as not to read a peer's write half done), reads both again and
//     repairs: installs the kept key if one matches the certificate (the
//     previous key a renewal cut short was replacing), or, when none
//     exists anywhere, deletes certificate,
//     key and metadata (in that order) and answers fs.ErrNotExist, so
//     certmagic obtains a new certificate at once.
//   - Load of SiteMeta that finds none, beside a key and certificate that
//     are a valid pair (a first issuance cut before its last write): the
//     metadata is written from the certificate, so that the name is served.
//
// Every certmagic path that loads a certificate from storage reads the key
// first through Config.Storage (loadCertResource), so the repair covers them:
// CacheManagedCertificate (managing a name at start, on-demand handshakes),
// reloadManagedCertificate and managedCertInStorageNeedsRenewal (maintenance
// finding a newer certificate in storage, renewed by a peer). Loads made
// while this Caddy holds the name's issue lock (renewCert, reusePrivateKey)
// are not repaired: the renewal under way writes a new set anyway. With a
// certmagic LocalCache (Caddy sets none) a torn local copy is reread from
// Storage by certmagic itself, through this wrapper.

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/internal/issuance"
	"github.com/sslci/caddy-sslci/internal/ledger"
)

// serverKeyTTL is how long SSLCI's key is remembered in memory for its
// certificate: certmagic stores it within seconds of Issue returning, and
// forgets a certificate whose write failed (it obtains a new one).
const serverKeyTTL = 24 * time.Hour

// serverKeys are SSLCI's keys that Issue returned certificates for, until
// certmagic has stored the certificate.
type serverKeys struct {
	mu      sync.Mutex
	pending map[[32]byte]pendingKey // by the SHA-256 of the CSR's public key
}

type pendingKey struct {
	pem   []byte // SSLCI's key
	added time.Time
}

// rememberServerKey makes SSLCI's key known to keyStorage by the CSR's
// public key, before Issue returns the certificate: the key certmagic
// writes for that CSR is replaced by it.
func (iss *Issuer) rememberServerKey(csr *x509.CertificateRequest, keyPEM []byte) {
	now := time.Now()
	iss.keys.mu.Lock()
	defer iss.keys.mu.Unlock()
	if iss.keys.pending == nil {
		iss.keys.pending = make(map[[32]byte]pendingKey)
	}
	for h, p := range iss.keys.pending {
		if now.Sub(p.added) > serverKeyTTL {
			delete(iss.keys.pending, h)
		}
	}
	iss.keys.pending[sha256.Sum256(csr.RawSubjectPublicKeyInfo)] = pendingKey{pem: keyPEM, added: now}
}

// serverKeyFor returns SSLCI's key if keyPEM is the key of a CSR whose
// certificate is for SSLCI's key.
func (iss *Issuer) serverKeyFor(keyPEM []byte) (pendingKey, [32]byte, bool) {
	key, err := certmagic.PEMDecodePrivateKey(keyPEM)
	if err != nil {
		return pendingKey{}, [32]byte{}, false
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return pendingKey{}, [32]byte{}, false
	}
	h := sha256.Sum256(der)
	iss.keys.mu.Lock()
	defer iss.keys.mu.Unlock()
	p, ok := iss.keys.pending[h]
	return p, h, ok
}

// guardKeys wraps cfg's storage in keyStorage, once.
func (iss *Issuer) guardKeys(cfg *certmagic.Config) {
	if ks, ok := cfg.Storage.(*keyStorage); cfg.Storage == nil || ok && ks.iss == iss {
		return
	}
	ks := &keyStorage{Storage: cfg.Storage, own: iss.getStorage(), iss: iss, keys: iss.ledger.Keys, cfg: cfg}
	cfg.Storage = ks
	if stop, delay := iss.stopped, sweepDelay; stop != nil {
		go func() {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-stop.Done():
			case <-t.C:
				ks.sweepKept(stop)
			}
		}()
	}
}

// keyStorage is certmagic's storage, as seen by certmagic, for a policy with
// this issuer. See the top of this file.
type keyStorage struct {
	certmagic.Storage                   // what certmagic's calls pass through to
	own               certmagic.Storage // the same storage, for the issuer's own operations (ownStorage)
	iss               *Issuer
	keys              ledger.Keys
	cfg               *certmagic.Config // whose storage this is

	mu       sync.Mutex
	held     map[string]int  // locks this Caddy holds through this storage
	retrying map[string]bool // names whose repair is to be tried again
	previous map[string]pair // by site: what a renewal this Caddy writes replaces (keptkeys.go)
	writing  map[string]*siteWrite
}

// siteWrite is the set certmagic is writing for a site, as far as it got:
// once the metadata is written, the kept keys go if the key and
// certificate written are a pair (keptkeys.go).
type siteWrite struct{ keyPEM, certPEM []byte }

// wrote records a write of the set of site; f updates its record.
func (ks *keyStorage) wrote(site string, f func(*siteWrite)) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.writing == nil {
		ks.writing = make(map[string]*siteWrite)
	}
	w := ks.writing[site]
	if w == nil {
		w = new(siteWrite)
		ks.writing[site] = w
	}
	f(w)
}

// repairRetryDelay is how long after a repair that storage errors left
// undone it is tried again.
var repairRetryDelay = time.Minute

// Store writes SSLCI's key in place of the CSR's, keeps the key a renewal
// overwrites, and deletes the site's kept keys once its set is stored.
func (ks *keyStorage) Store(ctx context.Context, key string, value []byte) error {
	certmagicCall("store", key)
	if name, ok := ks.keys.Site(key, ledger.Keys.SiteKey); ok {
		p, csr, swap := ks.iss.serverKeyFor(value)
		if swap {
			value = p.pem
		}
		if err := ks.keepPrevious(ctx, name, value); err != nil {
			ks.iss.metrics.Failed(issuance.StepStore)
			return err
		}
		if err := ks.Storage.Store(ctx, key, value); err != nil {
			ks.renewed(name)
			ks.iss.metrics.Failed(issuance.StepStore)
			return err
		}
		ks.wrote(name, func(w *siteWrite) { w.keyPEM, w.certPEM = value, nil })
		if swap {
			ks.iss.keys.mu.Lock()
			delete(ks.iss.keys.pending, csr)
			ks.iss.keys.mu.Unlock()
			ks.iss.logger.Info("stored the private key SSLCI generated in place of Caddy's", zap.String("identifier", name))
		}
		return nil
	}
	if err := ks.Storage.Store(ctx, key, value); err != nil {
		if ks.isSite(key) {
			ks.iss.metrics.Failed(issuance.StepStore) // certmagic's storing of a certificate
		}
		return err
	}
	if name, ok := ks.keys.Site(key, ledger.Keys.SiteCert); ok {
		ks.wrote(name, func(w *siteWrite) { w.certPEM = value })
	}
	ks.seen(key, value)
	if name, ok := ks.keys.Site(key, ledger.Keys.SiteMeta); ok {
		w := ks.written(name)
		ks.renewed(name)
		ks.dropKept(ctx, name, w)
	}
	return nil
}

// Delete of a site's certificate or key while this Caddy writes a renewal
// of it is certmagic's roll-back of a renewal whose later write failed
// (storeTx deletes what it wrote): the previous certificate and key are put
// back instead, so that storage holds the pair that was served.
func (ks *keyStorage) Delete(ctx context.Context, key string) error {
	certmagicCall("delete", key)
	for _, kind := range []func(ledger.Keys, string) string{ledger.Keys.SiteCert, ledger.Keys.SiteKey} {
		name, ok := ks.keys.Site(key, kind)
		if !ok {
			continue
		}
		prev, ok := ks.renewing(name)
		if !ok {
			break
		}
		value := prev.certPEM
		if key == ks.keys.SiteKey(name) {
			value = prev.keyPEM
			defer ks.renewed(name) // the key is the roll-back's last delete
		}
		ks.iss.logger.Warn("a renewal's write failed: putting back the certificate and key it was replacing", zap.String("identifier", name))
		if err := ks.Storage.Store(ctx, key, value); err != nil {
			return err
		}
		ks.seen(key, value)
		return nil
	}
	if err := ks.Storage.Delete(ctx, key); err != nil {
		return err
	}
	ks.seen(key, nil)
	return nil
}

// isSite says whether key is a file certmagic stores for a certificate of
// this issuer.
func (ks *keyStorage) isSite(key string) bool {
	for _, kind := range []func(ledger.Keys, string) string{ledger.Keys.SiteKey, ledger.Keys.SiteCert, ledger.Keys.SiteMeta} {
		if _, ok := ks.keys.Site(key, kind); ok {
			return true
		}
	}
	return false
}

// seen keeps the expiry metrics' index current (metrics.go) with a
// certificate certmagic loaded, stored or deleted (nil) at key.
func (ks *keyStorage) seen(key string, certPEM []byte) {
	if _, ok := ks.keys.Site(key, ledger.Keys.SiteCert); ok {
		ks.iss.metrics.expiry.put(ks.Storage, key, certPEM, ks.cfg.RenewalWindowRatio)
	}
}

// Load checks a site's key against its certificate and repairs the pair.
func (ks *keyStorage) Load(ctx context.Context, key string) ([]byte, error) {
	certmagicCall("load", key)
	if name, ok := ks.keys.Site(key, ledger.Keys.SiteMeta); ok {
		data, err := ks.Storage.Load(ctx, key)
		if errors.Is(err, fs.ErrNotExist) && !ks.holding(name) {
			return ks.repairMeta(ctx, name, err)
		}
		return data, err
	}
	name, ok := ks.keys.Site(key, ledger.Keys.SiteKey)
	if !ok {
		data, err := ks.Storage.Load(ctx, key)
		if err == nil {
			ks.seen(key, data)
		}
		return data, err
	}
	if ks.holding(name) {
		return ks.Storage.Load(ctx, key)
	}
	keyPEM, certPEM, err := ks.loadPair(ctx, name)
	if err != nil || certPEM == nil || pairMatches(certPEM, keyPEM) == nil {
		return keyPEM, err
	}
	keyPEM, err = ks.repair(ctx, name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		ks.iss.logger.Warn("repairing a stored certificate whose private key is not its own: left as it is; tried again later",
			zap.String("identifier", name), zap.Duration("retry_in", repairRetryDelay), zap.Error(err))
		ks.retryLater(name)
	}
	return keyPEM, err
}

// repairMeta writes the metadata of a stored certificate whose metadata is
// missing (certmagic writes key, certificate, then metadata: a first
// issuance cut before the last), if the key and certificate are a pair:
// without it certmagic takes the name for one without a certificate, and
// the name is off HTTPS until SSLCI can be reached. Else it answers
// notFound, as storage did.
func (ks *keyStorage) repairMeta(ctx context.Context, name string, notFound error) ([]byte, error) {
	keyPEM, certPEM, err := ks.loadPair(ctx, name)
	if err != nil || certPEM == nil || pairMatches(certPEM, keyPEM) != nil {
		return nil, notFound
	}
	leaf, err := ledger.ParseLeaf(certPEM)
	if err != nil || !time.Now().Before(leaf.NotAfter) {
		return nil, notFound
	}
	// Not waiting for the lock: certmagic may hold its certificate cache
	// while it loads (its maintenance does), and a peer's failing issuance
	// holds the lock for days. Held: the name is a peer's to finish.
	unlock, ok := ledger.TryLock(ctx, ks.own, ledger.IssueLockOfDir(name))
	if !ok {
		return nil, notFound
	}
	defer unlock()
	if data, err := ks.own.Load(ctx, ks.keys.SiteMeta(name)); !errors.Is(err, fs.ErrNotExist) {
		return data, err // a peer finished writing it
	}
	issuerData, err := json.Marshal(issuance.Metadata{Endpoint: ks.iss.Endpoint})
	if err != nil {
		return nil, err
	}
	meta, err := json.Marshal(certmagic.CertificateResource{SANs: leaf.DNSNames, IssuerData: issuerData})
	if err != nil {
		return nil, err
	}
	if err := ks.own.Store(ctx, ks.keys.SiteMeta(name), meta); err != nil {
		return nil, fmt.Errorf("sslci: %s: writing the missing metadata of a stored certificate: %w", name, err)
	}
	ks.iss.logger.Warn("repaired a stored certificate whose metadata was missing (an issuance cut before certmagic wrote it)", zap.String("identifier", name))
	return meta, nil
}

// retryLater tries a repair again, once storage may answer: certmagic
// gives up on a name whose certificate it could not load for another
// reason than "not exist" (until a restart), so the issuer asks it to
// manage the name again, and its load comes through Load once more.
func (ks *keyStorage) retryLater(name string) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.retrying[name] || ks.cfg == nil || ks.iss.stopped == nil {
		return
	}
	if ks.retrying == nil {
		ks.retrying = make(map[string]bool)
	}
	ks.retrying[name] = true
	stop := ks.iss.stopped
	go func() {
		t := time.NewTimer(repairRetryDelay)
		defer t.Stop()
		select {
		case <-stop.Done():
			return
		case <-t.C:
		}
		ks.mu.Lock()
		delete(ks.retrying, name)
		ks.mu.Unlock()
		if err := ks.cfg.ManageAsync(stop, []string{name}); err != nil {
			ks.iss.logger.Warn("managing a name again after a repair left undone", zap.String("identifier", name), zap.Error(err))
		}
	}()
}

// loadPair reads a site's key and certificate; certPEM is nil if there is
// no certificate to check the key against.
func (ks *keyStorage) loadPair(ctx context.Context, name string) (keyPEM, certPEM []byte, err error) {
	keyPEM, err = ks.own.Load(ctx, ks.keys.SiteKey(name))
	if err != nil {
		return nil, nil, err
	}
	certPEM, err = ks.own.Load(ctx, ks.keys.SiteCert(name))
	if err != nil {
		return keyPEM, nil, nil // certmagic's own load of it reports the error
	}
	return keyPEM, certPEM, nil
}

// pairMatches says whether keyPEM is the key of certPEM's certificate, as
// certmagic checks it (tls.X509KeyPair). A set is checked when it is
// written and again as certmagic loads it, 11 checks of 3 pairs in
// TestStorageOpsPerCertificate: a pair that matched is remembered by a
// hash of its exact bytes (up to matchedPairsMax of them), so each pair is
// parsed once. A pair that did not match is checked again each time.
func pairMatches(certPEM, keyPEM []byte) error {
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(certPEM))))
	h.Write(certPEM)
	h.Write(keyPEM)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if _, ok := matchedPairs.Load(sum); ok {
		return nil
	}
	pairParses.Add(1)
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return err
	}
	if matchedCount.Add(1) <= matchedPairsMax {
		matchedPairs.Store(sum, struct{}{})
	}
	return nil
}

const matchedPairsMax = 100_000

var (
	matchedPairs sync.Map // [sha256.Size]byte → struct{}
	matchedCount atomic.Int64
	pairParses   atomic.Int64 // tls.X509KeyPair calls, for the tests
)

// repair makes a site's key and certificate a pair again, under certmagic's
// issue lock for the name, if it is free: installs the kept key that matches the
// certificate, or deletes the set so that certmagic obtains a new one.
// Storage that cannot say whether a kept key exists leaves the set alone:
// a later load repairs it.
func (ks *keyStorage) repair(ctx context.Context, name string) ([]byte, error) {
	// Not waiting for the lock (see repairMeta): held, the repair is tried
	// again a minute later (Load's retryLater).
	unlock, ok := ledger.TryLock(ctx, ks.own, ledger.IssueLockOfDir(name))
	if !ok {
		return nil, fmt.Errorf("sslci: %s: a certificate whose private key is not its own, and its issue lock is held (an issuance of it, here or on a peer): left as it is", name)
	}
	defer unlock()

	keyPEM, certPEM, err := ks.loadPair(ctx, name)
	if err != nil || certPEM == nil {
		return keyPEM, err
	}
	mismatch := pairMatches(certPEM, keyPEM)
	if mismatch == nil {
		return keyPEM, nil // a peer finished writing it
	}
	log := ks.iss.logger.With(zap.String("identifier", name), zap.NamedError("problem", mismatch))

	switch kept, keptAt, err := ks.keptKeyFor(ctx, name, certPEM); {
	case err != nil:
		return nil, fmt.Errorf("sslci: %s: reading the private keys kept for a stored certificate whose private key is not its own; left as it is: %w", name, err)
	case kept != nil:
		if err := ks.own.Store(ctx, ks.keys.SiteKey(name), kept); err != nil {
			return nil, fmt.Errorf("sslci: %s: installing the kept private key of the stored certificate: %w", name, err)
		}
		if err := ks.own.Delete(ctx, keptAt); err != nil {
			log.Warn("deleting the kept private key after installing it", zap.Error(err))
		}
		log.Warn("repaired a stored certificate whose private key was not its own: installed the kept private key of the certificate " +
			"(the previous key a renewal cut short was replacing; certmagic renews it again when due)")
		return kept, nil
	}

	// The certificate goes first: without it, certmagic obtains again.
	for _, k := range []string{ks.keys.SiteCert(name), ks.keys.SiteKey(name), ks.keys.SiteMeta(name)} {
		if err := ks.own.Delete(ctx, k); err != nil {
			return nil, fmt.Errorf("sslci: %s: removing an unusable certificate (its private key is not its own): %w", name, err)
		}
	}
	log.Warn("removed a stored certificate whose private key was not its own, and for which no kept key matched; a new certificate will be obtained")
	return nil, fmt.Errorf("sslci: %s: removed an unusable certificate: %w", name, fs.ErrNotExist)
}

func (ks *keyStorage) holding(name string) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.held[ledger.IssueLockOfDir(name)] > 0
}

func (ks *keyStorage) hold(lock string, n int) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.held == nil {
		ks.held = make(map[string]int)
	}
	if ks.held[lock] += n; ks.held[lock] <= 0 {
		delete(ks.held, lock)
	}
}

// Lock, TryLock and Unlock record what this Caddy holds, so that a load
// under its own issue lock does not wait for that lock.
func (ks *keyStorage) Lock(ctx context.Context, name string) error {
	certmagicCall("lock", name)
	if err := ks.Storage.Lock(ctx, name); err != nil {
		return err
	}
	ks.hold(name, 1)
	return nil
}

func (ks *keyStorage) TryLock(ctx context.Context, name string) (bool, error) {
	certmagicCall("trylock", name)
	tl, ok := ks.Storage.(certmagic.TryLocker)
	if !ok {
		// What certmagic does for a storage without TryLock.
		err := ks.Lock(ctx, name)
		return err == nil, err
	}
	got, err := tl.TryLock(ctx, name)
	if got {
		ks.hold(name, 1)
	}
	return got, err
}

func (ks *keyStorage) Unlock(ctx context.Context, name string) error {
	certmagicCall("unlock", name)
	ks.hold(name, -1)
	return ks.Storage.Unlock(ctx, name)
}

// Exists, Stat and List pass through.
func (ks *keyStorage) Exists(ctx context.Context, key string) bool {
	certmagicCall("exists", key)
	return ks.Storage.Exists(ctx, key)
}

func (ks *keyStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	certmagicCall("stat", key)
	return ks.Storage.Stat(ctx, key)
}

func (ks *keyStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	certmagicCall("list", prefix)
	return ks.Storage.List(ctx, prefix, recursive)
}

// ownStorage is the storage handle for the issuer's own operations (the
// ledger, challenges, kept keys, repairs): the storage itself, or in tests
// a wrapper that counts them.
var ownStorage = func(s certmagic.Storage) certmagic.Storage { return s }

// certmagicCalls, set by tests, sees each call certmagic makes to the
// storage: the tests count storage operations per certificate, certmagic's
// apart from the issuer's (which bypass this wrapper).
var certmagicCalls atomic.Pointer[func(op, key string)]

func certmagicCall(op, key string) {
	if f := certmagicCalls.Load(); f != nil {
		(*f)(op, key)
	}
}

// RenewLockLease passes lease renewals through to storages that have them.
func (ks *keyStorage) RenewLockLease(ctx context.Context, lock string, d time.Duration) error {
	if r, ok := ks.Storage.(certmagic.LockLeaseRenewer); ok {
		return r.RenewLockLease(ctx, lock, d)
	}
	return nil
}

// String names the storage it wraps, for certmagic's logs.
func (ks *keyStorage) String() string { return fmt.Sprint(ks.Storage) }

// Interface guards
var (
	_ certmagic.Storage          = (*keyStorage)(nil)
	_ certmagic.TryLocker        = (*keyStorage)(nil)
	_ certmagic.LockLeaseRenewer = (*keyStorage)(nil)
)
