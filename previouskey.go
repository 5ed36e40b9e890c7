package sslci

// A renewal overwrites a site's key before its certificate (storeTx writes
// SitePrivateKey, then SiteCert, then SiteMeta). Cut in between, by a kill,
// a storage error or a hang, storage holds the new key beside the previous
// certificate, still valid for weeks. So before the key of a valid pair is
// overwritten, keyStorage keeps it (ledger.Keys.PreviousKey, named by the
// certificate's public key and expiry), and the repair of a mismatched pair
// puts it back: the name is served at once with the previous certificate,
// with SSLCI reachable or not, and certmagic renews it again when it can.
// The kept key goes once the renewed certificate is stored beside its own
// key, when it is put back, or once its certificate has expired; a sweep a
// minute after the start deletes those a stopped Caddy left.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/internal/ledger"
)

// keepPrevious keeps the key stored for the site (a names key) before
// newKey overwrites it, if the stored key and certificate are a valid
// pair and newKey is another key. A storage that cannot say what it holds
// fails the write: certmagic keeps serving what it has and renews later.
func (ks *keyStorage) keepPrevious(ctx context.Context, site string, newKey []byte) error {
	keyPEM, err := ks.Storage.Load(ctx, ks.keys.SiteKey(site))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a first issuance
	}
	if err != nil {
		return fmt.Errorf("sslci: %s: reading the private key a renewal replaces: %w", site, err)
	}
	if string(keyPEM) == string(newKey) {
		return nil // the key is reused
	}
	certPEM, err := ks.Storage.Load(ctx, ks.keys.SiteCert(site))
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
	ks.removeExpiredPrevious(ctx, site)
	kept := ks.keys.PreviousKey(site, sha256.Sum256(leaf.RawSubjectPublicKeyInfo), leaf.NotAfter)
	if err := ks.Storage.Store(ctx, kept, keyPEM); err != nil {
		return fmt.Errorf("sslci: %s: keeping the private key of the certificate a renewal replaces: %w", site, err)
	}
	return nil
}

// dropPrevious deletes the previous keys kept for site once certPEM, just
// stored, is stored beside its own key: the renewed set is complete, and
// the keys of the certificates it replaced are of no more use.
func (ks *keyStorage) dropPrevious(ctx context.Context, site string, certPEM []byte) {
	files, err := ks.Storage.List(ctx, ks.keys.PreviousKeys(site), false)
	if err != nil || len(files) == 0 {
		return // none (or storage cannot say: left for the sweep, or for their expiry)
	}
	keyPEM, err := ks.Storage.Load(ctx, ks.keys.SiteKey(site))
	if err != nil || pairMatches(certPEM, keyPEM) != nil {
		return // left for the repair
	}
	ks.dropPreviousExcept(ctx, site, files, certPEM)
}

// dropPreviousExcept deletes the kept keys in files but certPEM's own.
func (ks *keyStorage) dropPreviousExcept(ctx context.Context, site string, files []string, certPEM []byte) {
	own := ""
	if leaf, err := ledger.ParseLeaf(certPEM); err == nil {
		spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		own = hex.EncodeToString(spki[:])
	}
	for _, f := range files {
		if spki, _, ok := ledger.ParsePreviousKey(f); ok && spki == own {
			continue
		}
		if err := ks.Storage.Delete(ctx, f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			ks.iss.logger.Warn("deleting the private key kept during a renewal", zap.String("identifier", site), zap.Error(err))
		}
	}
}

// sweepPrevious deletes, once, sweepDelay after the start, the kept
// previous keys that a Caddy which stopped between storing the renewed
// certificate and deleting them left: those of a site whose stored pair is
// complete and is another certificate, and those whose certificate has
// expired. A site whose pair is not complete keeps them, for its repair.
func (ks *keyStorage) sweepPrevious(ctx context.Context) {
	dirs, err := ks.Storage.List(ctx, path.Dir(ks.keys.PreviousKeys("x")), false)
	if err != nil {
		return
	}
	for _, dir := range dirs {
		site := path.Base(dir)
		ks.removeExpiredPrevious(ctx, site)
		files, err := ks.Storage.List(ctx, dir, false)
		if err != nil || len(files) == 0 {
			continue
		}
		keyPEM, certPEM, err := ks.loadPair(ctx, site)
		if err != nil || certPEM == nil || pairMatches(certPEM, keyPEM) != nil {
			continue
		}
		ks.dropPreviousExcept(ctx, site, files, certPEM)
	}
}

// previousKeyFor returns the kept previous key of certPEM's certificate
// for site, and where it is kept; nil if there is none. An error means
// storage could not say.
func (ks *keyStorage) previousKeyFor(ctx context.Context, site string, certPEM []byte) (keyPEM []byte, kept string, err error) {
	leaf, err := ledger.ParseLeaf(certPEM)
	if err != nil {
		return nil, "", nil
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	files, err := ks.Storage.List(ctx, ks.keys.PreviousKeys(site), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	for _, f := range files {
		if !strings.HasPrefix(strings.TrimPrefix(f, ks.keys.PreviousKeys(site)+"/"), hex.EncodeToString(spki[:])+"-") {
			continue
		}
		keyPEM, err := ks.Storage.Load(ctx, f)
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

// removeExpiredPrevious deletes the previous keys kept for site whose
// certificates have expired: nothing can use them any more.
func (ks *keyStorage) removeExpiredPrevious(ctx context.Context, site string) {
	files, err := ks.Storage.List(ctx, ks.keys.PreviousKeys(site), false)
	if err != nil {
		return
	}
	for _, f := range files {
		if _, notAfter, ok := ledger.ParsePreviousKey(f); ok && time.Now().After(notAfter) {
			if err := ks.Storage.Delete(ctx, f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				ks.iss.logger.Warn("deleting an expired certificate's kept private key", zap.String("identifier", site), zap.Error(err))
			}
		}
	}
}
