package ledger

import (
	"encoding/hex"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// This file is the one home of every storage key and lock name the issuer
// uses, its own and certmagic's, as certmagic's KeyBuilder is for certmagic.
// Under the storage's root:
//
//	sslci/<issuer key>/<account>/ledger/floor.json
//	sslci/<issuer key>/<account>/ledger/sweep-index.json
//	sslci/<issuer key>/<account>/ledger/orders/<domain>/<unique>.json
//	sslci/<issuer key>/<account>/ledger/certificates/<first name>/<unique>.json
//	sslci/<issuer key>/<account>/verifications/<domain>.json
//	sslci/<issuer key>/keys/<names key>/<sha256>-<not after>.pem
//	                                                         private keys kept for a site's certificates
//	acme/<issuer key>/challenge_tokens/<domain>.json         HTTP challenges
//	certificates/<issuer key>/<names key>/...                certmagic's own
//
// Each part is made safe with certmagic.StorageKeys.Safe, as certmagic's
// own keys are. The account is a non-secret id of the token, never the token.

// Keys builds the storage keys of one issuer and account.
type Keys struct {
	IssuerKey string // the issuer's IssuerKey
	Account   string // a hash of the token
}

func safe(s string) string { return memo(&safeMemo, s, certmagic.StorageKeys.Safe) }

// certmagic's StorageKeys builds a strings.Replacer at every call, and the
// key storage wrapper asks for a site's keys at every storage operation:
// at a thousand names that was 40% of Caddy's allocations. So each key is
// built by certmagic once, then remembered (up to memoLimit of each).
var (
	safeMemo, certsDirMemo, siteMemo sync.Map
	memoSize                         atomic.Int64
)

const memoLimit = 100_000

func memo[V any](m *sync.Map, key string, build func(string) V) V {
	if v, ok := m.Load(key); ok {
		return v.(V)
	}
	v := build(key)
	if memoSize.Add(1) <= memoLimit {
		m.Store(key, v)
	}
	return v
}

// siteFiles are the keys of the files certmagic stores for one certificate.
type siteFiles struct{ key, cert, meta string }

func (k Keys) site(namesKey string) siteFiles {
	return memo(&siteMemo, k.IssuerKey+"\x00"+namesKey, func(string) siteFiles {
		return siteFiles{
			key:  certmagic.StorageKeys.SitePrivateKey(k.IssuerKey, namesKey),
			cert: certmagic.StorageKeys.SiteCert(k.IssuerKey, namesKey),
			meta: certmagic.StorageKeys.SiteMeta(k.IssuerKey, namesKey),
		}
	})
}

func (k Keys) issuerDir() string { return path.Join("sslci", safe(k.IssuerKey)) }

// LedgerDir holds every ledger record of the account.
func (k Keys) LedgerDir() string { return path.Join(k.issuerDir(), k.Account, "ledger") }

// Record kinds: the folders under LedgerDir.
const (
	kindOrders = "orders"
	kindCerts  = "certificates"
)

// recordsDir is the folder of one kind's records filed under name (a
// certificate's under its first name, sorted).
func (k Keys) recordsDir(kind, name string) string { return path.Join(k.LedgerDir(), kind, safe(name)) }

// Floor is the record of the highest ids seen at the account.
func (k Keys) Floor() string { return path.Join(k.LedgerDir(), "floor.json") }

// SweepIndex is the sweep's index of the records it found stored.
func (k Keys) SweepIndex() string { return path.Join(k.LedgerDir(), "sweep-index.json") }

// Verification is where the record of name's last confirmed verification is.
func (k Keys) Verification(name string) string {
	return path.Join(k.issuerDir(), k.Account, "verifications", safe(name)+".json")
}

// KeptKeysRoot holds a folder of kept private keys per site.
func (k Keys) KeptKeysRoot() string { return path.Join(k.issuerDir(), "keys") }

// KeptKeys is the folder of the private keys kept for the certificates
// stored under namesKey: SSLCI's key from Issue until its certificate is
// stored beside it, and a certificate's key while a renewal overwrites it.
func (k Keys) KeptKeys(namesKey string) string { return path.Join(k.KeptKeysRoot(), safe(namesKey)) }

// KeptKey is where the key with this public key (the SHA-256 of its
// SubjectPublicKeyInfo), for a certificate valid until notAfter, is kept.
func (k Keys) KeptKey(namesKey string, spki [32]byte, notAfter time.Time) string {
	return path.Join(k.KeptKeys(namesKey), fmt.Sprintf("%s-%d.pem", hex.EncodeToString(spki[:]), notAfter.Unix()))
}

// ParseKeptKey reads a KeptKey's public key hash (hex) and not-after time.
func ParseKeptKey(key string) (spki string, notAfter time.Time, ok bool) {
	spki, unix, ok := strings.Cut(strings.TrimSuffix(path.Base(key), ".pem"), "-")
	secs, err := strconv.ParseInt(unix, 10, 64)
	if !ok || err != nil || len(spki) != 64 {
		return "", time.Time{}, false
	}
	return spki, time.Unix(secs, 0), true
}

// Challenge is where certmagic's HTTP-challenge handler looks for a
// challenge of this issuer: distributedSolver.challengeTokensKey under
// storageKeyACMECAPrefix(IssuerKey()), both unexported in certmagic.
func (k Keys) Challenge(domain string) string {
	return path.Join("acme", safe(k.IssuerKey), "challenge_tokens", safe(domain)+".json")
}

// CertsDir is certmagic's folder of this issuer's certificates.
func (k Keys) CertsDir() string {
	return memo(&certsDirMemo, k.IssuerKey, certmagic.StorageKeys.CertsPrefix)
}

// The files certmagic stores for a certificate, by its names key.
func (k Keys) SiteCert(namesKey string) string { return k.site(namesKey).cert }
func (k Keys) SiteKey(namesKey string) string  { return k.site(namesKey).key }
func (k Keys) SiteMeta(namesKey string) string { return k.site(namesKey).meta }

// NamesKey is certmagic's name for the certificate of a set of names
// (CertificateResource.NamesKey: sorted, joined by commas, truncated).
func NamesKey(names []string) string {
	return (&certmagic.CertificateResource{SANs: append([]string(nil), names...)}).NamesKey()
}

// Site says whether key is the file of kind (SiteKey, SiteCert or
// SiteMeta) of one of this issuer's certificates, and of which names key.
func (k Keys) Site(key string, kind func(Keys, string) string) (namesKey string, ok bool) {
	rest, ok := strings.CutPrefix(key, k.CertsDir()+"/")
	dir, _, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || kind(k, dir) != key {
		return "", false
	}
	return dir, true
}

// issueLockPrefix: certmagic's lock for obtaining or renewing a name is
// "issue_cert_" + the name (Config.lockKey in its config.go).
const issueLockPrefix = "issue_cert_"

// IssueLock is certmagic's lock of name, held while it obtains or renews
// a certificate for it: the issuer's reconciliation, prune, the key repair
// and delete_replaced take it too, so that none races an issuance.
func IssueLock(name string) string { return issueLockPrefix + name }

// IssueLockOfDir is the lock of the certificate stored in the folder dir
// (StorageKeys.Safe spells a leading "*" as "wildcard_").
func IssueLockOfDir(dir string) string {
	if rest, ok := strings.CutPrefix(dir, "wildcard_"); ok {
		dir = "*" + rest
	}
	return IssueLock(dir)
}
