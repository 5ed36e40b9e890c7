package sslcitest

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Options configure a Server. The zero value is a plain-HTTP server on a
// random loopback port with one random token.
type Options struct {
	// Addr is the listen address; default "127.0.0.1:0".
	Addr string
	// Tokens are the API tokens, one account each; default one random token.
	Tokens []string
	// Validity is the certificate lifetime; default 90 days (as in the
	// documentation's example).
	Validity time.Duration
	// VerificationWindow is how long a confirmed verification lets finalize
	// use the domain; default 29 days (documented).
	VerificationWindow time.Duration
	// Now is the clock; default time.Now. Advance adds an offset on top.
	Now func() time.Time
	// SignCSR makes finalize sign the public key of the "csr" it carries
	// (PEM) instead of generating a key. The documented service generates
	// key and CSR itself, so the default is false.
	SignCSR bool
	// HTTPChallengeAddr is the "host:port" every HTTP-01 check dials,
	// whatever the domain; empty means <domain>:80.
	HTTPChallengeAddr string
	// DNSServer is the "host:port" of the DNS server that TXT checks query
	// (UDP, falling back to TCP); empty means the system resolver.
	DNSServer string
	// LookupTXT, if set, replaces DNSServer. It receives the fully
	// qualified record name WITH the trailing dot, for example
	// "_acme-challenge.example.com.".
	LookupTXT func(ctx context.Context, name string) ([]string, error)
	// TLS serves HTTPS with a certificate from the simulator's own root,
	// valid for 127.0.0.1, ::1, localhost and TLSHosts.
	TLS      bool
	TLSHosts []string
	// Faults are random fault rates; InjectFault queues faults explicitly.
	Faults FaultRates
	// Seed seeds the fault dice; every seed, 0 included, repeats its run.
	Seed int64
	// Logf, if set, logs every request (never its token).
	Logf func(format string, args ...any)
}

func (o Options) withDefaults() (Options, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	o.Tokens = slices.Clone(o.Tokens) // the caller's slice may change
	if len(o.Tokens) == 0 {
		o.Tokens = []string{randomToken()}
	}
	seen := make(map[string]bool)
	for _, t := range o.Tokens {
		if t == "" || seen[t] {
			return o, errors.New("sslcitest: tokens must be non-empty and unique")
		}
		seen[t] = true
	}
	if o.Validity < 0 || o.VerificationWindow < 0 {
		return o, errors.New("sslcitest: Validity and VerificationWindow must not be negative")
	}
	if o.Validity == 0 {
		o.Validity = 90 * 24 * time.Hour
	}
	if o.VerificationWindow == 0 {
		o.VerificationWindow = 29 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := o.Faults.validate(); err != nil {
		return o, err
	}
	if o.Faults.RetryAfter <= 0 {
		o.Faults.RetryAfter = time.Second
	}
	return o, nil
}
