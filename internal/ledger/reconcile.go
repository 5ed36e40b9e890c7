package ledger

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// This file reconciles the ledger with SSLCI's list: by the ownership rule
// (ownership.go) it cancels the orders no longer needed, deletes the
// certificates this Caddy made but does not store, and drops the records
// left with nothing to reconcile. It runs at the start of an Issue whose
// names have records, after an answer lost inside an Issue, and once in
// the background after the issuer is set up (the sweep), under certmagic's
// lock of each name involved, so it never races an issuance of a live
// Caddy. Whatever cannot be read (a record, a stored certificate) stops
// the reconciliation before it removes anything: it is tried again later.

// Scope selects the records a reconciliation is about.
type Scope struct {
	names []string // the ledger folders to read; nil: all
	order func(OrderRecord) bool
	cert  func(CertRecord) bool
	skip  func(key string) bool // records known to need nothing: not read
	// stored sees each certificate record read that is stored and valid.
	stored func(CertRecord)
}

// ForNames is every record about one of names: what an Issue for them
// may reconcile under certmagic's lock.
func ForNames(names []string) Scope {
	in := func(n string) bool { return slices.Contains(names, n) }
	return Scope{
		names: names,
		order: func(r OrderRecord) bool { return in(r.Domain) },
		cert:  func(r CertRecord) bool { return slices.ContainsFunc(r.Names, in) },
	}
}

// OrderOf is the order records of name alone: what a lost verification
// request for it may have made.
func OrderOf(name string) Scope {
	return Scope{names: []string{name}, order: func(o OrderRecord) bool { return o.Domain == name }}
}

// CertOf is the certificate records of exactly these names: what a lost
// finalize for them may have made.
func CertOf(names []string) Scope {
	set := slices.Sorted(slices.Values(names))
	return Scope{names: set[:1], cert: func(c CertRecord) bool { return slices.Equal(c.Names, set) }}
}

// everything is every record of the account: the sweep's.
var everything = Scope{order: func(OrderRecord) bool { return true }, cert: func(CertRecord) bool { return true }}

// ErrUnsettled is Reconcile's error when SSLCI's list was read and
// classified but an order or certificate could not be cancelled or
// deleted: its records stay, for the next reconciliation.
var ErrUnsettled = errors.New("reconciled with SSLCI's list, but a deletion failed")

// Reconcile settles the records in scope with one GET list, if any of
// them needs it. The newest recorded pending order of each domain in
// resume, made by method and with its challenge, is not cancelled but
// returned, to be resumed (also with ErrUnsettled).
func (l *Ledger) Reconcile(ctx context.Context, sc Scope, resume []string, method string) (map[string]*OrderRecord, error) {
	orders, certs, err := l.inScope(ctx, sc)
	if err != nil || (len(orders) == 0 && len(certs) == 0) {
		return nil, err
	}
	var sets [][]string
	for _, r := range certs {
		if !slices.ContainsFunc(sets, func(s []string) bool { return slices.Equal(s, r.Names) }) {
			sets = append(sets, r.Names)
		}
	}
	// Read before the list: a certificate that cannot be read may be the
	// one Caddy serves, and must not be taken for one it does not store.
	stored, err := l.leavesFor(ctx, sets)
	if err != nil {
		return nil, err
	}
	list, err := l.Client.List(ctx)
	if err != nil {
		return nil, err
	}
	l.seenList(list)
	l.SaveFloor(ctx)
	o := classify(list, orders, certs, stored, l.isLive, time.Now())

	resumed := make(map[string]*OrderRecord)
	for _, g := range o.groups {
		if r := g.resumable; r != nil && slices.Contains(resume, r.Domain) && r.Method == method &&
			(resumed[r.Domain] == nil || r.OrderID > resumed[r.Domain].OrderID) {
			resumed[r.Domain] = r
		}
	}
	var unsettled error
	for _, g := range o.groups {
		if r := g.resumable; r == nil || resumed[r.Domain] != r {
			if err := l.settle(ctx, g); err != nil && unsettled == nil {
				unsettled = fmt.Errorf("%w: %w", ErrUnsettled, err)
			}
		}
	}
	for _, r := range o.stored {
		r.State = StateStored
		if err := l.Put(ctx, r.Key, r); err != nil {
			l.Logger.Warn("updating a ledger record", zap.Error(err))
		}
	}
	if len(o.ambiguous) > 0 {
		l.Logger.Warn("SSLCI records like those whose answer was lost were made by another client too; "+
			"none can be proven ours, all are left alone", zap.Int64s("ids", o.ambiguous))
	}
	return resumed, unsettled
}

// inScope reads the records in scope that need SSLCI's list, after doing
// what needs none: history records of expired certificates are dropped,
// and obtained certificates seen in storage marked stored.
func (l *Ledger) inScope(ctx context.Context, sc Scope) ([]OrderRecord, []CertRecord, error) {
	allOrders, allCerts, err := l.readRecords(ctx, sc.names, sc.skip)
	if err != nil {
		return nil, nil, err
	}
	var orders []OrderRecord
	for _, r := range allOrders {
		if sc.order != nil && sc.order(r) && !l.isLive(r.Key) {
			orders = append(orders, r)
		}
	}
	var certs []CertRecord
	now := time.Now()
	for _, r := range allCerts {
		if sc.cert == nil || !sc.cert(r) || l.isLive(r.Key) {
			continue
		}
		if r.State == StateObtained {
			leaves, err := l.leavesFor(ctx, [][]string{r.Names})
			if err != nil {
				return nil, nil, err
			}
			if storedAs(leaves, r.Names, r.NotAfter.Unix()) != nil {
				r.State = StateStored
				if err := l.Put(ctx, r.Key, r); err != nil {
					return nil, nil, err
				}
			}
		}
		switch {
		case r.State == StateStored && !now.Before(r.NotAfter):
			l.Drop(ctx, r.Key)
		case r.State != StateStored:
			certs = append(certs, r)
		case sc.stored != nil:
			sc.stored(r)
		}
	}
	// With orders or certificates to reconcile, the history of the same
	// names goes along: it tells a stored certificate from a lost one.
	if len(certs) > 0 {
		for _, r := range allCerts {
			if r.State == StateStored && sc.cert != nil && sc.cert(r) && now.Before(r.NotAfter) {
				certs = append(certs, r)
			}
		}
	}
	return orders, certs, nil
}

// settle cancels or deletes a group's objects at SSLCI, then drops its
// records; on failure the records stay, for a later reconciliation.
func (l *Ledger) settle(ctx context.Context, g group) error {
	for _, id := range g.ids {
		if err := l.Delete(ctx, g.recordType, id); err != nil {
			l.Logger.Warn("reconciling with SSLCI: deleting a record left for later",
				zap.String("type", g.recordType), zap.Int64("id", id), zap.Error(err))
			return err
		}
		what := "cancelled SSLCI order left behind"
		if g.recordType == api.RecordCertificate {
			what = "deleted SSLCI certificate this Caddy made and does not store"
		}
		l.Logger.Info(what, zap.Int64("id", id))
	}
	for _, key := range g.keys {
		l.Drop(ctx, key)
	}
	return nil
}

// sweepMaxWait bounds how long the sweep waits, after its delay, for the
// issuances in flight to end; sweepPoll is how often it looks.
var (
	sweepMaxWait = 2 * time.Minute
	sweepPoll    = time.Second
)

// sweepState is the background sweep's.
type sweepState struct {
	stop    context.CancelFunc
	stopped bool
}

// StartSweep reconciles, once, in the background, delay after now, the
// records a Caddy that died left: under certmagic's issue lock of each
// name involved, so that it never races an issuance of a live Caddy on
// the same storage. If issuances are in flight in this process then (a
// start with thousands of names), it waits for a moment with none, up to
// sweepMaxWait more: it reads every record not in its index and marks each
// certificate seen stored, a write each, which would compete with them
// for the storage. A second call does nothing; StopSweep stops it.
func (l *Ledger) StartSweep(delay time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	l.mu.Lock()
	if l.storage == nil || l.sweep.stop != nil || l.sweep.stopped {
		l.mu.Unlock()
		cancel()
		return
	}
	l.sweep.stop = cancel
	l.mu.Unlock()
	go func() {
		defer cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		for quiet := time.Now().Add(sweepMaxWait); l.issuing.Load() > 0 && time.Now().Before(quiet); {
			select {
			case <-ctx.Done():
				return
			case <-time.After(sweepPoll):
			}
		}
		if err := l.Sweep(ctx); err != nil && ctx.Err() == nil {
			l.Logger.Warn("reconciling the ledger with SSLCI; the next issuance of these names will", zap.Error(err))
		}
	}()
}

// StopSweep stops the background sweep and the floor's pending write
// (from the issuer's Cleanup).
func (l *Ledger) StopSweep() {
	l.mu.Lock()
	l.sweep.stopped = true
	if l.sweep.stop != nil {
		l.sweep.stop()
	}
	// The floor's pending write is dropped: writing at a stop could hang it
	// on a storage that hangs, or write after the storage is gone; the floor
	// on record stays lower, which is still true (SaveFloor).
	if l.floorTimer != nil {
		l.floorTimer.Stop()
		l.floorTimer = nil
	}
	l.mu.Unlock()
}

// Sweep reconciles every record that needs SSLCI's list, under the issue
// locks of their names.
func (l *Ledger) Sweep(ctx context.Context) error {
	idx := l.loadSweepIndex(ctx)
	now := time.Now()
	sc := everything
	sc.skip = func(key string) bool { return idx.valid(key, now) }
	sc.stored = idx.add
	orders, certs, err := l.inScope(ctx, sc)
	if err != nil {
		return err
	}
	l.saveSweepIndex(ctx, idx)
	if len(orders) == 0 && len(certs) == 0 {
		return nil
	}
	var names []string
	for _, r := range orders {
		names = append(names, r.Domain)
	}
	for _, r := range certs {
		names = append(names, r.Names...)
	}
	locked, unlock := l.lockNames(ctx, names)
	defer unlock()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var held []string
	for _, n := range names {
		if !locked[n] && !slices.Contains(held, n) {
			held = append(held, n)
		}
	}
	if len(held) > 0 {
		l.Logger.Info("reconciling the ledger: the records of names whose issue lock is held are left to their next issuance", zap.Strings("names", held))
	}
	if len(locked) == 0 {
		return nil
	}
	_, err = l.Reconcile(ctx, allLocked(locked), nil, "")
	return err
}

// allLocked is every record whose names are all in locked: what the sweep
// may reconcile under the locks it holds.
func allLocked(locked map[string]bool) Scope {
	return Scope{
		names: slices.Sorted(maps.Keys(locked)),
		order: func(r OrderRecord) bool { return locked[r.Domain] },
		cert: func(r CertRecord) bool {
			return !slices.ContainsFunc(r.Names, func(n string) bool { return !locked[n] })
		},
	}
}
