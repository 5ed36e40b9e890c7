package sslci

// Test helpers of this package that its external tests (package
// sslci_test) use too, so each exists once.
var (
	NewCSR   = newCSR
	FreePort = freePort
)

// Hint is what Issue adds to its errors, for causes Issue cannot reach.
func Hint(err error) error { return (&Issuer{}).hint(err) }
