package sslci

// Test helpers of this package that its external tests (package
// sslci_test) use too, so each exists once.
var (
	NewCSR   = newCSR
	FreePort = freePort
)
