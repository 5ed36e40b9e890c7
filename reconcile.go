package sslci

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// This file reconciles the ledger (ledger.go) with SSLCI's list: by the
// ownership rule (ownership.go) it cancels the orders no longer needed,
// deletes the certificates this Caddy made but does not store, and drops
// the records left with nothing to reconcile. It runs at the start of an Issue whose names have
// records, after an answer lost inside an Issue, and once in the
// background after the issuer is set up (sweep), under certmagic's lock of
// each name involved, so it never races an issuance of a live Caddy.

// storedLeaves reads the leaves certmagic stores for each set of names
// (its key is the sorted names joined by commas: CertificateResource.NamesKey).
func (iss *Issuer) storedLeaves(ctx context.Context, sets [][]string) []storedLeaf {
	var out []storedLeaf
	for _, names := range sets {
		data, err := iss.getStorage().Load(ctx, certmagic.StorageKeys.SiteCert(iss.IssuerKey(), strings.Join(names, ",")))
		if err != nil {
			continue
		}
		if certs, err := parseCertificates(data); err == nil && len(certs) > 0 {
			out = append(out, storedLeaf{Names: normalNames(certs[0].DNSNames), NotAfter: certs[0].NotAfter})
		}
	}
	return out
}

// scope selects the records a reconciliation is about.
type scope struct {
	names []string // the ledger folders to read; nil: all
	order func(orderRecord) bool
	cert  func(certRecord) bool
}

// forNames is every record about one of names: what an Issue for them
// may reconcile under certmagic's lock.
func forNames(names []string) scope {
	in := func(n string) bool { return slices.Contains(names, n) }
	return scope{
		names: names,
		order: func(r orderRecord) bool { return in(r.Domain) },
		cert:  func(r certRecord) bool { return slices.ContainsFunc(r.Names, in) },
	}
}

// reconcile settles the records in scope with one GET list, if any of
// them needs it. The newest recorded pending order of each domain in
// resume, made by the configured method and with its challenge, is not
// cancelled but returned, to be resumed.
func (iss *Issuer) reconcile(ctx context.Context, sc scope, resume []string) (map[string]*orderRecord, error) {
	orders, certs, err := iss.inScope(ctx, sc)
	if err != nil || (len(orders) == 0 && len(certs) == 0) {
		return nil, err
	}
	list, err := iss.client.List(ctx)
	if err != nil {
		return nil, err
	}
	iss.seenList(list)
	iss.saveFloor(ctx)
	var sets [][]string
	for _, r := range certs {
		if !slices.ContainsFunc(sets, func(s []string) bool { return slices.Equal(s, r.Names) }) {
			sets = append(sets, r.Names)
		}
	}
	o := classify(list, orders, certs, iss.storedLeaves(ctx, sets), iss.isLive, time.Now())

	resumed := make(map[string]*orderRecord)
	for _, g := range o.groups {
		if r := g.resumable; r != nil && slices.Contains(resume, r.Domain) && r.Method == iss.Method &&
			(resumed[r.Domain] == nil || r.OrderID > resumed[r.Domain].OrderID) {
			resumed[r.Domain] = r
		}
	}
	for _, g := range o.groups {
		if r := g.resumable; r == nil || resumed[r.Domain] != r {
			iss.settle(ctx, g)
		}
	}
	for _, r := range o.stored {
		r.State = stateStored
		if err := iss.put(ctx, r.key, r); err != nil {
			iss.logger.Warn("updating a ledger record", zap.Error(err))
		}
	}
	if len(o.ambiguous) > 0 {
		iss.logger.Warn("SSLCI records like those whose answer was lost were made by another client too; "+
			"none can be proven ours, all are left alone", zap.Int64s("ids", o.ambiguous))
	}
	return resumed, nil
}

// inScope reads the records in scope that need SSLCI's list, after doing
// what needs none: history records of expired certificates are dropped,
// and obtained certificates seen in storage marked stored.
func (iss *Issuer) inScope(ctx context.Context, sc scope) ([]orderRecord, []certRecord, error) {
	allOrders, allCerts, err := iss.ledgerRecordsOf(ctx, sc.names)
	if err != nil {
		return nil, nil, err
	}
	var orders []orderRecord
	for _, r := range allOrders {
		if sc.order != nil && sc.order(r) && !iss.isLive(r.key) {
			orders = append(orders, r)
		}
	}
	var certs []certRecord
	now := time.Now()
	for _, r := range allCerts {
		if sc.cert == nil || !sc.cert(r) || iss.isLive(r.key) {
			continue
		}
		if r.State == stateObtained && slices.ContainsFunc(iss.storedLeaves(ctx, [][]string{r.Names}), func(s storedLeaf) bool {
			return slices.Equal(s.Names, r.Names) && s.NotAfter.Equal(r.NotAfter)
		}) {
			r.State = stateStored
			if err := iss.put(ctx, r.key, r); err != nil {
				return nil, nil, err
			}
		}
		switch {
		case r.State == stateStored && !now.Before(r.NotAfter):
			iss.drop(ctx, r.key)
		case r.State != stateStored:
			certs = append(certs, r)
		}
	}
	// With orders or certificates to reconcile, the history of the same
	// names goes along: it tells a stored certificate from a lost one.
	if len(certs) > 0 {
		for _, r := range allCerts {
			if r.State == stateStored && sc.cert != nil && sc.cert(r) && now.Before(r.NotAfter) {
				certs = append(certs, r)
			}
		}
	}
	return orders, certs, nil
}

// settle cancels or deletes a group's objects at SSLCI, then drops its
// records. A 400 is taken as "no such record": gone already (a retried
// DELETE whose first answer was lost gets one).
func (iss *Issuer) settle(ctx context.Context, g group) {
	for _, id := range g.ids {
		err := iss.client.Delete(ctx, g.recordType, id)
		if err != nil && !errors.Is(err, api.ErrInvalidRequest) {
			iss.logger.Warn("reconciling with SSLCI: deleting a record left for later",
				zap.String("type", g.recordType), zap.Int64("id", id), zap.Error(err))
			return
		}
		what := "cancelled SSLCI order left behind"
		if g.recordType == api.RecordCertificate {
			what = "deleted SSLCI certificate this Caddy made and does not store"
		}
		iss.logger.Info(what, zap.Int64("id", id))
	}
	for _, key := range g.keys {
		iss.drop(ctx, key)
	}
}

// sweepDelay: the issuances certmagic starts with Caddy settle their own
// names first (resuming their orders); the sweep settles the rest.
var sweepDelay = time.Minute

// startSweep reconciles, once, in the background, sweepDelay after the
// start, the records a Caddy that died left: under certmagic's lock
// ("issue_cert_<name>", as its obtain and renew take) of each name
// involved, so that it never races an issuance of a live Caddy on the same
// storage. Cleanup stops it (stopSweep).
func (iss *Issuer) startSweep() {
	storage := iss.getStorage()
	if storage == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	iss.ledger.mu.Lock()
	if iss.ledger.stopped != nil {
		iss.ledger.mu.Unlock()
		cancel()
		return
	}
	iss.ledger.stopped = cancel
	iss.ledger.mu.Unlock()
	delay := sweepDelay
	go func() {
		defer cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		if err := iss.sweep(ctx, storage); err != nil && ctx.Err() == nil {
			iss.logger.Warn("reconciling the ledger with SSLCI; the next issuance of these names will", zap.Error(err))
		}
	}()
}

func (iss *Issuer) sweep(ctx context.Context, storage certmagic.Storage) error {
	all := scope{order: func(orderRecord) bool { return true }, cert: func(certRecord) bool { return true }}
	orders, certs, err := iss.inScope(ctx, all)
	if err != nil || (len(orders) == 0 && len(certs) == 0) {
		return err
	}
	var names []string
	for _, r := range orders {
		names = append(names, r.Domain)
	}
	for _, r := range certs {
		names = append(names, r.Names...)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	for _, name := range names {
		if err := storage.Lock(ctx, issueLockPrefix+name); err != nil {
			return err
		}
		defer storage.Unlock(context.WithoutCancel(ctx), issueLockPrefix+name) //nolint:errcheck // logged by certmagic's storage
	}
	_, err = iss.reconcile(ctx, forNames(names), nil)
	return err
}

// stopSweep stops the background sweep (from Cleanup).
func (iss *Issuer) stopSweep() {
	iss.ledger.mu.Lock()
	defer iss.ledger.mu.Unlock()
	if iss.ledger.stopped != nil {
		iss.ledger.stopped()
	}
}
