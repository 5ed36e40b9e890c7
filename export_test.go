package sslci

import (
	"time"

	"github.com/sslci/caddy-sslci/internal/issuance"
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
