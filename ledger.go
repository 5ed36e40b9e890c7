package sslci

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// This file is the ledger: what this Caddy (every Caddy on this storage)
// asked SSLCI to create, written to storage BEFORE the request is sent, so
// that neither a crash nor a lost answer makes us forget an order or a
// certificate. reconcile.go compares it with SSLCI's list.
//
// Storage, per issuer key and account (like the verification records):
//
//	sslci/<issuer key>/<account>/ledger/floor.json
//	sslci/<issuer key>/<account>/ledger/orders/<domain>/<unique>.json
//	sslci/<issuer key>/<account>/ledger/certificates/<first name>/<unique>.json
//
// An order record (orderRecord) exists while its order may be pending at
// SSLCI: "sent" until the answer arrives, then "pending" with the order id
// and the challenge (enough to resume it after a restart). It is deleted
// once the order is confirmed (the verification record takes over) or
// cancelled, or found gone from SSLCI's list.
//
// A certificate record (certRecord) is one finalize attempt: "sent" until
// the answer arrives; "obtained" once returned to certmagic; "stored" once
// seen in certmagic's storage (kept as history: a stored certificate that a
// later one replaced is "superseded"); "refused" when our checks refused it
// (to be deleted at SSLCI). It is deleted once its certificate is deleted at
// SSLCI, or found gone, or expired.
//
// Package-internal API, for the issuer and for `caddy sslci list/prune`:
//
//	iss.ledgerRecords(ctx)            every record, with its storage key
//	iss.storedLeaves(ctx, sets)       the leaves certmagic stores for these sets of names
//	classify(list, orders, certs, stored, live, now)
//	                                  what each listed order and certificate is to
//	                                  this Caddy (owner, with String): the ownership
//	                                  rule, in one place (ownership.go)
//
// The README section "What survives a crash, what is reconciled" states the
// ownership rule for operators.

// Record states.
const (
	stateSent     = "sent"     // request written, answer not (yet) known
	statePending  = "pending"  // order: answered, not confirmed
	stateObtained = "obtained" // certificate: returned to certmagic
	stateStored   = "stored"   // certificate: seen in certmagic's storage
	stateRefused  = "refused"  // certificate: refused by our checks
)

// orderRecord is one verification request.
type orderRecord struct {
	Domain string    `json:"domain"`
	Method string    `json:"method"`
	SentAt time.Time `json:"sent_at"`
	// Floor is the highest order id this Caddy had seen when the request
	// was sent: the order it created, if any, has a higher id.
	Floor   int64      `json:"floor"`
	State   string     `json:"state"`
	OrderID int64      `json:"order_id,omitempty"`
	Chal    *challenge `json:"challenge,omitempty"`

	key string // storage key
}

// challenge is what SSLCI asked to put in place, kept to resume an order.
type challenge struct {
	Token      string `json:"token,omitempty"`
	Content    string `json:"content"`
	FilePath   string `json:"file_path,omitempty"`
	RecordName string `json:"record_name,omitempty"`
}

func (r *orderRecord) verification() *api.Verification {
	v := &api.Verification{Domain: r.Domain, OrderID: r.OrderID, Method: r.Method}
	if c := r.Chal; c != nil {
		v.Token, v.Content, v.FilePath, v.RecordName = c.Token, c.Content, c.FilePath, c.RecordName
	}
	return v
}

// certRecord is one finalize attempt.
type certRecord struct {
	Names      []string  `json:"names"` // sorted
	SentAt     time.Time `json:"sent_at"`
	Floor      int64     `json:"floor"` // the highest crt_id seen when sent (0: none)
	State      string    `json:"state"`
	AnsweredAt time.Time `json:"answered_at,omitzero"`
	NotAfter   time.Time `json:"not_after,omitzero"` // the leaf's, when it parsed
	CertID     int64     `json:"crt_id,omitempty"`   // when learned from a list

	key string
}

// floorRecord holds the highest ids this Caddy has seen at the account.
type floorRecord struct {
	Order int64 `json:"order_floor"`
	Cert  int64 `json:"cert_floor"`
}

// ledger is the issuer's in-memory part of the ledger.
type ledger struct {
	mu      sync.Mutex
	floor   *floorRecord    // nil until loaded from storage or from a list
	saved   *floorRecord    // what floor.json holds, as far as we know
	live    map[string]bool // record keys of requests in flight in this process
	once    sync.Mutex      // held by ensureFloor: one GET list, not one per name
	stopped context.CancelFunc
}

func (iss *Issuer) ledgerPrefix() string {
	return path.Join("sslci", certmagic.StorageKeys.Safe(iss.IssuerKey()), iss.account, "ledger")
}

func uniqueName(t time.Time) string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%d-%s.json", t.UnixNano(), hex.EncodeToString(b))
}

func (iss *Issuer) newOrderRecord(domain string) *orderRecord {
	now := time.Now().UTC()
	return &orderRecord{
		Domain: domain, Method: iss.Method, SentAt: now, Floor: iss.floor().Order, State: stateSent,
		key: path.Join(iss.ledgerPrefix(), "orders", certmagic.StorageKeys.Safe(domain), uniqueName(now)),
	}
}

func (iss *Issuer) newCertRecord(names []string) *certRecord {
	now := time.Now().UTC()
	sorted := slices.Sorted(slices.Values(names))
	return &certRecord{
		Names: sorted, SentAt: now, Floor: iss.floor().Cert, State: stateSent,
		key: path.Join(iss.ledgerPrefix(), "certificates", certmagic.StorageKeys.Safe(sorted[0]), uniqueName(now)),
	}
}

// put writes a record; a request is never sent before its record is written.
func (iss *Issuer) put(ctx context.Context, key string, rec any) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	// Written even when ctx is done: the answer of a request already sent.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := iss.getStorage().Store(ctx, key, data); err != nil {
		return fmt.Errorf("writing the ledger record %s: %w", key, err)
	}
	return nil
}

// drop deletes a record that holds nothing left to reconcile.
func (iss *Issuer) drop(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := iss.getStorage().Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		iss.logger.Warn("deleting a ledger record", zap.String("key", key), zap.Error(err))
	}
}

// setLive marks a record as a request in flight in this process (on) or
// no longer (off): reconciliation leaves such a domain alone meanwhile.
func (iss *Issuer) setLive(key string, on bool) {
	l := &iss.ledger
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

func (iss *Issuer) isLive(key string) bool {
	iss.ledger.mu.Lock()
	defer iss.ledger.mu.Unlock()
	return iss.ledger.live[key]
}

// ledgerRecords reads every record of this issuer and account. Records
// that do not parse are skipped (and logged).
func (iss *Issuer) ledgerRecords(ctx context.Context) (orders []orderRecord, certs []certRecord, err error) {
	return iss.ledgerRecordsOf(ctx, nil)
}

// ledgerRecordsOf reads the records filed under names (a certificate's
// under its first name), or every record when names is nil. An Issue reads
// only its own names' folders: reading the whole ledger, which keeps a
// record per stored certificate, made each of a thousand issuances at once
// load a thousand records.
func (iss *Issuer) ledgerRecordsOf(ctx context.Context, names []string) (orders []orderRecord, certs []certRecord, err error) {
	storage := iss.getStorage()
	prefix := iss.ledgerPrefix()
	var keys []string
	for _, kind := range []string{"orders", "certificates"} {
		var found []string
		if names == nil {
			found, err = listTree(ctx, storage, path.Join(prefix, kind)) // never empty for a listing cut short
		}
		for _, name := range names {
			var files []string
			if files, err = listDir(ctx, storage, path.Join(prefix, kind, certmagic.StorageKeys.Safe(name))); err != nil {
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
	for _, key := range keys {
		kind := strings.SplitN(strings.TrimPrefix(key, prefix+"/"), "/", 2)[0]
		if !strings.HasSuffix(key, ".json") {
			continue
		}
		data, err := storage.Load(ctx, key)
		if errors.Is(err, fs.ErrNotExist) {
			continue // resolved meanwhile
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading the ledger record %s: %w", key, err)
		}
		if kind == "orders" {
			var r orderRecord
			if err = json.Unmarshal(data, &r); err == nil {
				r.key = key
				orders = append(orders, r)
			}
		} else {
			var r certRecord
			if err = json.Unmarshal(data, &r); err == nil && len(r.Names) > 0 {
				r.key = key
				certs = append(certs, r)
			}
		}
		if err != nil {
			iss.logger.Warn("ignoring a corrupt ledger record", zap.String("key", key), zap.Error(err))
		}
	}
	return orders, certs, nil
}

// floor is the highest ids seen so far (zero until known).
func (iss *Issuer) floor() floorRecord {
	iss.ledger.mu.Lock()
	defer iss.ledger.mu.Unlock()
	if f := iss.ledger.floor; f != nil {
		return *f
	}
	return floorRecord{}
}

// seen raises the floor to ids seen in an answer or a list.
func (iss *Issuer) seen(order, cert int64) {
	l := &iss.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.floor == nil {
		l.floor = new(floorRecord)
	}
	l.floor.Order = max(l.floor.Order, order)
	l.floor.Cert = max(l.floor.Cert, cert)
}

func (iss *Issuer) floorKey() string { return path.Join(iss.ledgerPrefix(), "floor.json") }

// ensureFloor makes the order floor known before this Caddy's first
// verification request at the account: from storage, else by one GET list
// (once per account and storage). Without it an order whose answer is lost
// could not be told from another client's.
func (iss *Issuer) ensureFloor(ctx context.Context) error {
	iss.ledger.once.Lock()
	defer iss.ledger.once.Unlock()
	iss.ledger.mu.Lock()
	known := iss.ledger.floor != nil
	iss.ledger.mu.Unlock()
	if known {
		return nil
	}
	if data, err := iss.getStorage().Load(ctx, iss.floorKey()); err == nil {
		var f floorRecord
		if json.Unmarshal(data, &f) == nil {
			iss.seen(f.Order, f.Cert)
			iss.ledger.mu.Lock()
			iss.ledger.saved = &f
			iss.ledger.mu.Unlock()
			return nil
		}
	}
	list, err := iss.client.List(ctx)
	if err != nil {
		return fmt.Errorf("listing the account before its first verification request: %w", err)
	}
	iss.seenList(list) // known from now on, even if the account is empty
	iss.saveFloor(ctx)
	return nil
}

// seenList raises the floor to the highest ids of a list.
func (iss *Issuer) seenList(list *api.List) {
	var order, cert int64
	for _, o := range list.PendingOrders {
		order = max(order, o.ID)
	}
	for _, c := range list.Certificates {
		cert = max(cert, c.ID)
	}
	iss.seen(order, cert)
}

// saveFloor writes the floor if it rose since last written. Another
// process may write a lower one meanwhile: a lower floor is still true.
func (iss *Issuer) saveFloor(ctx context.Context) {
	l := &iss.ledger
	l.mu.Lock()
	if l.floor == nil || (l.saved != nil && *l.floor == *l.saved) {
		l.mu.Unlock()
		return
	}
	f := *l.floor
	l.saved = &f
	l.mu.Unlock()
	if err := iss.put(ctx, iss.floorKey(), f); err != nil {
		iss.logger.Warn("saving the ledger's id floor", zap.Error(err))
	}
}
