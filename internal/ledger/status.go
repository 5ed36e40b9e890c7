package ledger

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// This file is what this issuer stores, read from storage alone (no API
// request): each certificate certmagic stores for it, when certmagic will
// renew it, whose key it is for, the last verification of each of its
// names and whether the renewal reuses it, and the ledger records still
// waiting to be settled. `caddy sslci status` shows it; the expiry metrics
// count by the same renewal rule (RenewAt). A read that fails is reported
// with its error, as unknown, never as "nothing stored".

// RenewAt is when certmagic starts renewing the certificate under a
// policy's renewal_window_ratio (0: certmagic's default, 1/3), as
// certmagic v0.25.6 decides it (Config.certNeedsRenewal; this issuer's
// certificates have no ACME renewal info): once the time left until
// expiry is below the lifetime × ratio, or below a fiftieth of the
// lifetime or 5 maintenance intervals (its emergency rules, with its
// default interval of 10 minutes). Maintenance looks every interval, so
// the renewal starts within one after RenewAt.
func (l Leaf) RenewAt(ratio float64) time.Time {
	expires := l.expiresAt()
	lifetime := expires.Sub(l.NotBefore)
	if ratio == 0 {
		ratio = certmagic.DefaultRenewalWindowRatio
	}
	at := expires.Add(-time.Duration(float64(lifetime) * max(ratio, 1.0/50)))
	if emergency := expires.Add(-5 * certmagic.DefaultRenewCheckInterval); emergency.Before(at) {
		return emergency
	}
	return at
}

// Due says whether the certificate is in its renewal window at now.
func (l Leaf) Due(now time.Time, ratio float64) bool { return now.After(l.RenewAt(ratio)) }

// Expired says whether it has expired at now, as certmagic says it.
func (l Leaf) Expired(now time.Time) bool { return now.After(l.expiresAt()) }

// expiresAt is certmagic's: NotAfter's second is still valid.
func (l Leaf) expiresAt() time.Time { return l.NotAfter.Truncate(time.Second).Add(time.Second) }

// Status is what this issuer stores for the account.
type Status struct {
	Certificates []CertStatus
	// What the ledger still has to settle with SSLCI: every order record
	// (an order may be pending), and the finalize records whose
	// certificate is not stored (answer unknown, refused, or never stored).
	Orders    []OrderRecord
	Finalizes []CertRecord
	// RecordsErr: the ledger could not be read; what it holds is unknown.
	RecordsErr error
}

// CertStatus is one stored certificate.
type CertStatus struct {
	Leaf             // Names, NotBefore and NotAfter are zero when Err is set
	Dir       string // its names key (certmagic's folder)
	RenewAt   time.Time
	KeySource string // from its metadata: "csr", "sslci", or "" if it has none
	KeyErr    error  // the metadata could not be read: whose key is unknown
	Verified  []NameStatus
	Err       error // the certificate could not be read: all unknown
}

// NameStatus is one name's last verification.
type NameStatus struct {
	Name string
	Last *Verification // nil: none recorded
	// Reused: the renewal reuses the verification (one request, the
	// finalize); else it verifies the name again.
	Reused bool
	Err    error // the record could not be read: unknown
}

// Status reads what this issuer stores, for the certificates and records
// of names (nil: all), at now; ratio is the renewal_window_ratio of the
// policy that manages a certificate's names. Only a listing of the
// certificates that fails is an error: anything else that cannot be read
// is reported in its place.
func (l *Ledger) Status(ctx context.Context, names []string, ratio func(names []string) float64, now time.Time) (*Status, error) {
	keys, err := l.storedCertKeys(ctx)
	if err != nil {
		return nil, err
	}
	st := &Status{}
	var leaves []Leaf
	in := func(n string) bool { return names == nil || slices.Contains(NormalNames(names), n) }
	for _, key := range keys {
		dir := path.Base(path.Dir(key))
		if names != nil && !dirMayHave(dir, names) {
			continue
		}
		c := l.certStatus(ctx, key, dir, ratio, now)
		if c.Err == nil && !slices.ContainsFunc(c.Names, in) {
			continue
		}
		if c.Err == nil {
			leaves = append(leaves, c.Leaf)
		}
		st.Certificates = append(st.Certificates, c)
	}

	var orders []OrderRecord
	var certs []CertRecord
	if names == nil {
		orders, certs, st.RecordsErr = l.Records(ctx)
	} else {
		orders, certs, st.RecordsErr = l.recordsOf(ctx, NormalNames(names))
	}
	for _, r := range orders {
		if in(r.Domain) {
			st.Orders = append(st.Orders, r)
		}
	}
	for _, r := range certs {
		// An obtained certificate found stored is history, as the next
		// reconciliation marks it.
		settled := r.State == StateStored || r.State == StateObtained && storedAs(leaves, r.Names, r.NotAfter.Unix()) != nil
		if !settled && slices.ContainsFunc(r.Names, in) {
			st.Finalizes = append(st.Finalizes, r)
		}
	}
	return st, nil
}

func (l *Ledger) certStatus(ctx context.Context, key, dir string, ratio func([]string) float64, now time.Time) CertStatus {
	c := CertStatus{Leaf: Leaf{Key: key}, Dir: dir}
	leaf, err := readStored(ctx, l.Storage(), key)
	switch {
	case err != nil:
		c.Err = err
		return c
	case leaf == nil:
		c.Err = fmt.Errorf("the stored certificate %s is gone", key)
		return c
	case leaf.Damaged:
		c.Err = fmt.Errorf("the stored certificate %s does not parse: %w", key, errDamaged)
		return c
	}
	c.Leaf = *leaf
	c.RenewAt = leaf.RenewAt(ratio(leaf.Names))
	c.KeySource, c.KeyErr = l.keySource(ctx, dir)
	renewal := c.RenewAt
	if now.After(renewal) {
		renewal = now // due: renewed at the next attempt
	}
	for _, name := range leaf.Names {
		v, err := l.Verification(ctx, name)
		if errors.Is(err, ErrCorrupt) {
			v, err = nil, nil // the issuance ignores it too, and verifies again
		}
		c.Verified = append(c.Verified, NameStatus{Name: name, Last: v, Reused: v != nil && v.ReusableAt(renewal), Err: err})
	}
	return c
}

// keySource reads whose key the certificate is for from the metadata the
// issuer returned with it (issuance.Metadata's key_source).
func (l *Ledger) keySource(ctx context.Context, dir string) (string, error) {
	d, err := l.readIssuerData(ctx, dir)
	if d == nil || err != nil {
		return "", err
	}
	return d.KeySource, nil
}

// dirMayHave says whether the certificate folder dir may be for one of
// names: certmagic names it by the names joined by commas, made safe,
// which drops the commas, so it holds each name.
func dirMayHave(dir string, names []string) bool {
	return slices.ContainsFunc(names, func(n string) bool { return strings.Contains(dir, safe(NormalName(n))) })
}
