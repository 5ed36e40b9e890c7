package sslci

import (
	"context"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/internal/issuance"
	"github.com/sslci/caddy-sslci/internal/ledger"
)

// SetSweepDelay sets how long after its start a Caddy sweeps the ledger.
func SetSweepDelay(d time.Duration) (restore func()) {
	old := sweepDelay
	sweepDelay = d
	return func() { sweepDelay = old }
}

// Hint is what Issue adds to its errors, for causes Issue cannot reach.
func Hint(err error) error { return issuance.Hint(err, nil) }

// SetRepairRetryDelay sets how long after a key repair that storage errors
// left undone it is tried again.
func SetRepairRetryDelay(d time.Duration) (restore func()) {
	old := repairRetryDelay
	repairRetryDelay = d
	return func() { repairRetryDelay = old }
}

// SetBackoffs sets the retry back-off of the issuers provisioned from now
// on: for tests that assert what retries do, not how long they wait.
func SetBackoffs(minWait, maxWait time.Duration) (restore func()) {
	old := issuance.DefaultRetry
	issuance.DefaultRetry.MinBackoff, issuance.DefaultRetry.MaxBackoff = minWait, maxWait
	return func() { issuance.DefaultRetry = old }
}

// SetLockWait sets how long prune and delete_replaced wait for a name's lock.
func SetLockWait(d time.Duration) (restore func()) {
	old := ledger.LockWait
	ledger.LockWait = d
	return func() { ledger.LockWait = old }
}

// CountStorageOps calls own for each storage operation the issuers
// provisioned from now on make themselves (the ledger, challenges, kept
// keys, repairs), and certmagic for each call certmagic makes to the
// storage of their policies: op is store, delete, load, stat, list, exists,
// lock, trylock or unlock.
func CountStorageOps(own, certmagicOp func(op, key string)) (restore func()) {
	oldOwn := ownStorage
	ownStorage = func(s certmagic.Storage) certmagic.Storage { return countingStorage{s, own} }
	certmagicCalls.Store(&certmagicOp)
	return func() {
		ownStorage = oldOwn
		certmagicCalls.Store(nil)
	}
}

type countingStorage struct {
	certmagic.Storage
	saw func(op, key string)
}

// String is the storage's own: the same storage, told apart by String as
// certmagic and the expiry index tell storages apart.
func (s countingStorage) String() string { return storageID(s.Storage) }

func (s countingStorage) Store(ctx context.Context, key string, value []byte) error {
	s.saw("store", key)
	return s.Storage.Store(ctx, key, value)
}

func (s countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	s.saw("load", key)
	return s.Storage.Load(ctx, key)
}

func (s countingStorage) Delete(ctx context.Context, key string) error {
	s.saw("delete", key)
	return s.Storage.Delete(ctx, key)
}

func (s countingStorage) Exists(ctx context.Context, key string) bool {
	s.saw("exists", key)
	return s.Storage.Exists(ctx, key)
}

func (s countingStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	s.saw("stat", key)
	return s.Storage.Stat(ctx, key)
}

func (s countingStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	s.saw("list", prefix)
	return s.Storage.List(ctx, prefix, recursive)
}

func (s countingStorage) Lock(ctx context.Context, name string) error {
	s.saw("lock", name)
	return s.Storage.Lock(ctx, name)
}

func (s countingStorage) Unlock(ctx context.Context, name string) error {
	s.saw("unlock", name)
	return s.Storage.Unlock(ctx, name)
}

// PairParses is how many key pairs the key storage has parsed so far.
func PairParses() int64 { return pairParses.Load() }

// ListenForCheck is what the HTTP solver does before SSLCI's check: serve
// on the HTTP port if nothing listens there (inUse false; release stops it).
func ListenForCheck(iss *Issuer) (release func(), inUse bool) {
	return (&httpSolver{iss: iss}).listen()
}

// SetPortRebindInterval sets how long a port found in use is not bound again.
func SetPortRebindInterval(d time.Duration) (restore func()) {
	old := portRebindInterval
	portRebindInterval = d
	return func() { portRebindInterval = old }
}

// AwaitHTTPApp is what the HTTP solver asks before taking the HTTP port:
// whether this Caddy's HTTP app has a server there, waited for.
func AwaitHTTPApp(iss *Issuer) bool { return iss.awaitHTTPApp(context.Background()) }

// ForgetPorts forgets which ports were found held.
func ForgetPorts() {
	fallbackMu.Lock()
	defer fallbackMu.Unlock()
	clear(portsHeld)
}

// SetExpiryQuiet sets how long the expiry index must go without a put
// before the expiry watch reads what certmagic did not load.
func SetExpiryQuiet(d time.Duration) (restore func()) {
	old := expiryQuiet
	expiryQuiet = d
	return func() { expiryQuiet = old }
}

// ExpiryRead says whether the expiry watch of iss's config has read its
// storage in full.
func (iss *Issuer) ExpiryRead() bool {
	x := iss.metrics.expiry
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.readInFull()
}
