// Package ledger owns what the issuer keeps in storage about SSLCI: every
// storage key and lock name (keys.go); the records of what this Caddy (every
// Caddy on the same storage) asked SSLCI to create, written BEFORE each
// request is sent, and the id floor; listing storage while others write
// (listing.go); the certificates certmagic stores (leaves.go); the one
// ownership rule with the marks `caddy sslci list` shows (ownership.go,
// marks.go); and reconciliation with SSLCI's list: the sweep, removal under
// certmagic's locks and the one "a 400 means gone" rule (reconcile.go,
// remove.go).
//
// It knows nothing of Caddy's modules; it uses certmagic only for its
// Storage interface and key builder, and the api package to talk to SSLCI.
// A storage error other than "not exist" is never taken for absence here:
// whatever would cancel, delete or remove on it is left for the next pass.
package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// Ledger is one issuer's ledger: its keys, the storage they are in, the
// API client that lists and deletes, and what this process knows of the
// records (the id floor, the requests in flight).
type Ledger struct {
	Keys   Keys
	Client *api.Client
	Logger *zap.Logger

	mu         sync.Mutex
	storage    certmagic.Storage
	floorV     *floorRecord    // nil until loaded from storage or from a list
	saved      *floorRecord    // what floor.json holds, as far as we know
	floorTimer *time.Timer     // SaveFloor's write, pending
	live       map[string]bool // record keys of requests in flight in this process
	once       sync.Mutex      // held by EnsureFloor: one GET list, not one per name
	sweep      sweepState
	issuing    atomic.Int64 // issuances in flight in this process (Issuing)
}

// Issuing counts an issuance in flight in this process until done is
// called: the sweep waits for a burst of them to end (StartSweep).
func (l *Ledger) Issuing() (done func()) {
	l.issuing.Add(1)
	return func() { l.issuing.Add(-1) }
}

// SetStorage sets the storage the ledger is in (certmagic's config's,
// given to the issuer by SetConfig).
func (l *Ledger) SetStorage(s certmagic.Storage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.storage = s
}

// Storage is the storage the ledger is in.
func (l *Ledger) Storage() certmagic.Storage {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.storage
}

// writeTimeout bounds a write or delete that must happen even though the
// caller's context is done (the answer of a request already sent, a
// clean-up on the way out).
const writeTimeout = 30 * time.Second

// Detached is ctx without its cancellation, bounded by writeTimeout: for
// what must be done even when the caller gave up.
func Detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
}

// Put writes a record (an *OrderRecord or *CertRecord, at its Key); a
// request is never sent before its record is written. It is written even
// when ctx is done: the answer of a request already sent.
func (l *Ledger) Put(ctx context.Context, key string, rec any) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := Detached(ctx)
	defer cancel()
	if err := l.Storage().Store(ctx, key, data); err != nil {
		return &WriteError{fmt.Errorf("writing the ledger record %s: %w", key, err)}
	}
	return nil
}

// WriteError is a record that could not be written: the issuance counts
// it as a failure to store, whichever step wrote it.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Drop deletes a record that holds nothing left to reconcile.
func (l *Ledger) Drop(ctx context.Context, key string) {
	ctx, cancel := Detached(ctx)
	defer cancel()
	if err := l.Storage().Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		l.Logger.Warn("deleting a ledger record", zap.String("key", key), zap.Error(err))
	}
}

// SetLive marks a record as a request in flight in this process (on) or
// no longer (off): reconciliation leaves it, and its domain, alone meanwhile.
func (l *Ledger) SetLive(key string, on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.live == nil {
		l.live = make(map[string]bool)
	}
	if on {
		l.live[key] = true
	} else {
		delete(l.live, key)
	}
}

func (l *Ledger) isLive(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live[key]
}

// Records reads every record of the account.
func (l *Ledger) Records(ctx context.Context) ([]OrderRecord, []CertRecord, error) {
	return l.recordsOf(ctx, nil)
}

// recordsOf reads the records filed under names (a certificate's under its
// first name), or every record when names is nil. An Issue reads only its
// own names' folders: reading the whole ledger, which keeps a record per
// stored certificate, made each of a thousand issuances at once load a
// thousand records. Records that do not parse are skipped (and logged); a
// record that cannot be read is an error, never skipped.
func (l *Ledger) recordsOf(ctx context.Context, names []string) (orders []OrderRecord, certs []CertRecord, err error) {
	return l.readRecords(ctx, names, nil)
}

// readRecords is recordsOf, leaving out the keys skip says need no reading.
func (l *Ledger) readRecords(ctx context.Context, names []string, skip func(key string) bool) (orders []OrderRecord, certs []CertRecord, err error) {
	storage := l.Storage()
	var keys []string
	for _, kind := range []string{kindOrders, kindCerts} {
		var found []string
		if names == nil {
			found, err = listTree(ctx, storage, l.Keys.LedgerDir()+"/"+kind) // never empty for a listing cut short
		}
		for _, name := range names {
			var files []string
			if files, err = ListDir(ctx, storage, l.Keys.recordsDir(kind, name)); err != nil {
				break
			}
			found = append(found, files...)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("listing the ledger: %w", err)
		}
		keys = append(keys, found...)
	}
	slices.Sort(keys)
	prefix := l.Keys.LedgerDir() + "/"
	for _, key := range keys {
		if !strings.HasSuffix(key, ".json") || skip != nil && skip(key) {
			continue
		}
		data, err := storage.Load(ctx, key)
		if errors.Is(err, fs.ErrNotExist) {
			continue // resolved meanwhile
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading the ledger record %s: %w", key, err)
		}
		if strings.HasPrefix(key, prefix+kindOrders+"/") {
			var r OrderRecord
			if err = json.Unmarshal(data, &r); err == nil {
				r.Key = key
				if err := l.answered(ctx, &r); err != nil {
					return nil, nil, err
				}
				orders = append(orders, r)
			}
		} else {
			var r CertRecord
			if err = json.Unmarshal(data, &r); err == nil && len(r.Names) > 0 {
				r.Key = key
				if err := l.linked(ctx, &r); err != nil {
					return nil, nil, err
				}
				certs = append(certs, r)
			}
		}
		if err != nil {
			l.Logger.Warn("ignoring a corrupt ledger record", zap.String("key", key), zap.Error(err))
		}
	}
	return orders, certs, nil
}

// floor is the highest ids seen so far (zero until known).
func (l *Ledger) floor() floorRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.floorV; f != nil {
		return *f
	}
	return floorRecord{}
}

// Seen raises the floor to ids seen in an answer or a list.
func (l *Ledger) Seen(order, cert int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.floorV == nil {
		l.floorV = new(floorRecord)
	}
	l.floorV.Order = max(l.floorV.Order, order)
	l.floorV.Cert = max(l.floorV.Cert, cert)
}

// EnsureFloor makes the order floor known before this Caddy's first
// verification request at the account: from storage, else by one GET list
// (once per account and storage). Without it an order whose answer is lost
// could not be told from another client's. A floor record that cannot be
// read costs the list: the list's floor is as true.
func (l *Ledger) EnsureFloor(ctx context.Context) error {
	l.once.Lock()
	defer l.once.Unlock()
	l.mu.Lock()
	known := l.floorV != nil
	l.mu.Unlock()
	if known {
		return nil
	}
	if data, err := l.Storage().Load(ctx, l.Keys.Floor()); err == nil {
		var f floorRecord
		if json.Unmarshal(data, &f) == nil {
			l.Seen(f.Order, f.Cert)
			l.mu.Lock()
			l.saved = &f
			l.mu.Unlock()
			return nil
		}
	}
	list, err := l.Client.List(ctx)
	if err != nil {
		return fmt.Errorf("listing the account before its first verification request: %w", err)
	}
	l.seenList(list) // known from now on, even if the account is empty
	l.SaveFloor(ctx)
	return nil
}

// seenList raises the floor to the highest ids of a list.
func (l *Ledger) seenList(list *api.List) {
	var order, cert int64
	for _, o := range list.PendingOrders {
		order = max(order, o.ID)
	}
	for _, c := range list.Certificates {
		cert = max(cert, c.ID)
	}
	l.Seen(order, cert)
}

// SaveFloor writes the floor if it rose since last written, within
// floorSaveDelay: a burst of issuances raises it once per order, and it is
// written once for the burst. A floor on record that is lower than the last
// ids seen, as a stop or a kill before the write leaves, or another
// process's write, is still true: it only makes more of the account's
// objects candidates for a lost answer (see classify), which it then leaves
// alone if they are too many.
func (l *Ledger) SaveFloor(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.floorTimer != nil || l.sweep.stopped || !l.floorDirty() {
		return
	}
	l.floorTimer = time.AfterFunc(floorSaveDelay, func() { l.flushFloor(context.WithoutCancel(ctx)) })
}

// floorSaveDelay is how long SaveFloor waits for the floor to rise again.
var floorSaveDelay = time.Second

func (l *Ledger) floorDirty() bool {
	return l.floorV != nil && (l.saved == nil || *l.floorV != *l.saved)
}

// flushFloor writes the floor if it rose since last written.
func (l *Ledger) flushFloor(ctx context.Context) {
	l.mu.Lock()
	if l.floorTimer != nil {
		l.floorTimer.Stop()
		l.floorTimer = nil
	}
	if !l.floorDirty() {
		l.mu.Unlock()
		return
	}
	f := *l.floorV
	l.saved = &f
	l.mu.Unlock()
	if err := l.Put(ctx, l.Keys.Floor(), f); err != nil {
		l.Logger.Warn("saving the ledger's id floor", zap.Error(err))
	}
}

// Delete cancels an order or deletes a certificate at SSLCI. A 400 is
// "no such record": gone already (a retried DELETE whose first answer was
// lost gets one), which is what was asked; it is the one place that says so.
// Only SSLCI's answer says it: a request the client could not even build
// is of the same kind, with no status, and proves nothing.
func (l *Ledger) Delete(ctx context.Context, recordType string, id int64) error {
	err := l.Client.Delete(ctx, recordType, id)
	if ae, ok := errors.AsType[*api.Error](err); ok && ae.StatusCode == http.StatusBadRequest && errors.Is(err, api.ErrInvalidRequest) {
		return nil
	}
	return err
}
