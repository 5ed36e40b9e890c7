package sslci

// The private keys kept in storage for a site's certificates, beside
// certmagic's own files, in one folder per site (ledger.Keys.KeptKeys), each
// named by its public key and its certificate's expiry: a certificate's
// key, while a renewal overwrites it. certmagic writes the new key, then
// the new certificate; cut in between (a kill, a storage error, a hang),
// storage holds the new key beside the previous certificate, still valid
// for weeks. The kept key is put back by the repair, so the name is served
// at once with the previous certificate, with SSLCI reachable or not, and
// certmagic renews it again when it can.
//
// SSLCI's own key needs no kept copy: it is the key certmagic writes first
// (keystorage.go), in this process, so no cut leaves its certificate stored
// without it.
//
// Every kept key of a site goes once a certificate is stored beside its own
// key (the set is complete: nothing kept is of use any more), when the
// repair puts it back, or once its certificate has expired; a sweep after
// the start deletes those a stopped Caddy left. The keys are never logged.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/internal/ledger"
)

// keepPrevious keeps the key stored for the site before newKey overwrites
// it, if the stored key and certificate are a valid pair and newKey is
// another key. A storage that cannot say what it holds fails the write:
// certmagic keeps serving what it has and renews later.
func (ks *keyStorage) keepPrevious(ctx context.Context, site string, newKey []byte) error {
	keyPEM, err := ks.own.Load(ctx, ks.keys.SiteKey(site))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a first issuance
	}
	if err != nil {
		return fmt.Errorf("sslci: %s: reading the private key a renewal replaces: %w", site, err)
	}
	if string(keyPEM) == string(newKey) {
		return nil // the key is reused
	}
	certPEM, err := ks.own.Load(ctx, ks.keys.SiteCert(site))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sslci: %s: reading the certificate a renewal replaces: %w", site, err)
	}
	leaf, err := ledger.ParseLeaf(certPEM)
	if err != nil || !time.Now().Before(leaf.NotAfter) || pairMatches(certPEM, keyPEM) != nil {
		return nil // nothing servable to keep
	}
	kept := ks.keys.KeptKey(site, sha256.Sum256(leaf.RawSubjectPublicKeyInfo), leaf.NotAfter)
	if err := ks.own.Store(ctx, kept, keyPEM); err != nil {
		return fmt.Errorf("sslci: %s: keeping the private key of the certificate a renewal replaces: %w", site, err)
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.previous == nil {
		ks.previous = make(map[string]pair)
	}
	ks.previous[site] = pair{certPEM: certPEM, keyPEM: keyPEM}
	return nil
}

// pair is a certificate and its key, as stored.
type pair struct{ certPEM, keyPEM []byte }

// renewing returns what the renewal of site this Caddy is writing
// replaces, if it is writing one.
func (ks *keyStorage) renewing(site string) (pair, bool) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	p, ok := ks.previous[site]
	return p, ok
}

// renewed ends the renewal of site: written, or rolled back.
func (ks *keyStorage) renewed(site string) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	delete(ks.previous, site)
	delete(ks.writing, site)
}

// written is what was written of site's set (nil: nothing known).
func (ks *keyStorage) written(site string) *siteWrite {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.writing[site]
}

// dropKept deletes the keys kept for site once its set is written (its
// metadata last) and its certificate is stored beside its own key: known
// from what was written (w), without reading it back.
func (ks *keyStorage) dropKept(ctx context.Context, site string, w *siteWrite) {
	if w == nil || w.certPEM == nil || pairMatches(w.certPEM, w.keyPEM) != nil {
		return // left for the repair
	}
	files, err := ks.own.List(ctx, ks.keys.KeptKeys(site), false)
	if err != nil || len(files) == 0 {
		return // none (or storage cannot say: left for the sweep, or for their expiry)
	}
	ks.deleteKept(ctx, site, files)
}

func (ks *keyStorage) deleteKept(ctx context.Context, site string, files []string) {
	for _, f := range files {
		if err := ks.own.Delete(ctx, f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			ks.iss.logger.Warn("deleting a kept private key", zap.String("identifier", site), zap.Error(err))
		}
	}
}

// keptKeyFor returns the kept key of certPEM's certificate for site, and
// where it is kept; nil if there is none. An error means storage could not
// say.
func (ks *keyStorage) keptKeyFor(ctx context.Context, site string, certPEM []byte) (keyPEM []byte, kept string, err error) {
	leaf, err := ledger.ParseLeaf(certPEM)
	if err != nil {
		return nil, "", nil
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	// A listing cut short is not "no kept key": the repair would then
	// delete a certificate set whose key is kept.
	files, err := ledger.ListDir(ctx, ks.own, ks.keys.KeptKeys(site))
	if err != nil {
		return nil, "", err
	}
	for _, f := range files {
		if h, _, ok := ledger.ParseKeptKey(f); !ok || h != hex.EncodeToString(spki[:]) {
			continue
		}
		keyPEM, err := ks.own.Load(ctx, f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		if pairMatches(certPEM, keyPEM) == nil {
			return keyPEM, f, nil
		}
	}
	return nil, "", nil
}

// sweepKept deletes the kept keys that a Caddy which stopped left: those
// of a site whose stored pair is complete, and those whose certificate
// has expired. A site whose pair is not complete keeps the others, for
// its repair.
func (ks *keyStorage) sweepKept(ctx context.Context) {
	dirs, err := ks.own.List(ctx, ks.keys.KeptKeysRoot(), false)
	if err != nil {
		return
	}
	for _, dir := range dirs {
		if ctx.Err() != nil {
			return
		}
		ks.sweepSite(ctx, path.Base(dir), dir)
	}
}

// sweepSite is sweepKept for one site, under its issue lock: a renewal of
// it in progress keeps keys in that folder (the previous one, then
// SSLCI's) while the stored pair is still the previous, complete one, and
// the folder holds the temporary file of a key being written.
func (ks *keyStorage) sweepSite(ctx context.Context, site, dir string) {
	// A bounded wait: a failing issuance holds the lock for days, and the
	// other sites' keys are swept after this one.
	lockCtx, cancel := context.WithTimeout(ctx, ledger.LockWait)
	defer cancel()
	lock := ledger.IssueLockOfDir(site)
	if err := ks.own.Lock(lockCtx, lock); err != nil {
		return // left for the next start, or for their expiry
	}
	defer ks.own.Unlock(context.WithoutCancel(ctx), lock) //nolint:errcheck // certmagic's storage logs it
	files, err := ks.own.List(ctx, dir, false)
	if err != nil || len(files) == 0 {
		return
	}
	keyPEM, certPEM, err := ks.loadPair(ctx, site)
	if err == nil && certPEM != nil && pairMatches(certPEM, keyPEM) == nil {
		ks.deleteKept(ctx, site, files)
		return
	}
	for _, f := range files {
		if _, notAfter, ok := ledger.ParseKeptKey(f); ok && time.Now().After(notAfter) {
			ks.deleteKept(ctx, site, []string{f})
		}
	}
}
