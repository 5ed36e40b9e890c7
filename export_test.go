package sslci

import (
	"time"

	"github.com/sslci/caddy-sslci/internal/issuance"
	"github.com/sslci/caddy-sslci/internal/ledger"
)

// Test helpers of this package that its external tests (package
// sslci_test) use too, so each exists once.
var FreePort = freePort

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
