package sslci

import (
	"context"
	"fmt"
	"time"

	"github.com/sslci/caddy-sslci/api"
)

// This file gives the commands the issuer's own ownership rule (classify,
// ownership.go) over the ledger in the target's storage: the commands
// decide nothing about ownership themselves.

// inProgressWindow: a record of ours younger than this may belong to an
// issuance still running (a verification may take verification_timeout,
// 5 minutes by default); list says "in progress" and prune leaves it.
const inProgressWindow = 15 * time.Minute

// ownedRecord is what the ledger says of one record at SSLCI.
type ownedRecord struct {
	ours       bool // this Caddy created it, provably
	superseded bool // a certificate this Caddy stored once, since replaced
	refused    bool // a certificate the issuer's checks refused
	recent     bool // created within inProgressWindow
}

// ledgerView is classify's answer for one list, with what the records say
// of each object (when, refused) and the record keys to drop once an
// object is removed.
type ledgerView struct {
	o       *ownership
	sentAt  map[string]time.Time // by object: the newest request of ours for it
	refused map[string]bool
	now     time.Time
}

func objectKey(recordType string, id int64) string { return fmt.Sprintf("%s/%d", recordType, id) }

// ledgerView classifies list with the ledger's records and the leaves in
// storage.
func (t *target) ledgerView(ctx context.Context, list *api.List, leaves []leafInStorage) (*ledgerView, error) {
	orders, certs, err := t.iss.ledgerRecords(ctx)
	if err != nil {
		return nil, fmt.Errorf("sslci: reading the ledger: %w", err)
	}
	return newLedgerView(list, orders, certs, leaves, time.Now()), nil
}

// newLedgerView applies classify. The commands run in a process of their
// own: no request of theirs is in flight (live), and prune holds
// certmagic's locks.
func newLedgerView(list *api.List, orders []orderRecord, certs []certRecord, leaves []leafInStorage, now time.Time) *ledgerView {
	stored := make([]storedLeaf, len(leaves))
	for i, l := range leaves {
		stored[i] = storedLeaf{Names: l.names, NotAfter: time.Unix(l.notAfter, 0)}
	}
	v := &ledgerView{sentAt: map[string]time.Time{}, refused: map[string]bool{}, now: now}
	v.o = classify(list, orders, certs, stored, func(string) bool { return false }, now)

	type rec struct {
		sentAt time.Time
		state  string
	}
	byKey := map[string]rec{}
	for _, r := range orders {
		byKey[r.key] = rec{r.SentAt, r.State}
	}
	for _, r := range certs {
		byKey[r.key] = rec{r.SentAt, r.State}
	}
	for _, g := range v.o.groups {
		for _, id := range g.ids {
			obj := objectKey(g.recordType, id)
			for _, k := range g.keys {
				r := byKey[k]
				if r.sentAt.After(v.sentAt[obj]) {
					v.sentAt[obj] = r.sentAt
				}
				v.refused[obj] = v.refused[obj] || r.state == stateRefused
			}
		}
	}
	return v
}

func (v *ledgerView) certificate(c api.CertificateInfo) ownedRecord {
	obj := objectKey(api.RecordCertificate, c.ID)
	switch v.o.Certs[c.ID] {
	case ownerHistory:
		return ownedRecord{ours: true, superseded: true}
	case ownerUnstored, ownerLost:
		return ownedRecord{ours: true, refused: v.refused[obj], recent: v.now.Sub(v.sentAt[obj]) < inProgressWindow}
	}
	return ownedRecord{} // not ours, or not provably (classify's ownerUnknown)
}

func (v *ledgerView) order(o api.OrderInfo) ownedRecord {
	switch v.o.Orders[o.ID] {
	case ownerRecorded, ownerLost:
		return ownedRecord{ours: true, recent: v.now.Sub(v.sentAt[objectKey(api.RecordOrder, o.ID)]) < inProgressWindow}
	}
	return ownedRecord{}
}

// resolved returns the ledger records that have nothing left to reconcile
// once the objects in done are removed: those of the groups all of whose
// objects were removed.
func (v *ledgerView) resolved(done map[string]bool) []string {
	var keys []string
	for _, g := range v.o.groups {
		if len(g.ids) == 0 {
			continue
		}
		all := true
		for _, id := range g.ids {
			all = all && done[objectKey(g.recordType, id)]
		}
		if all {
			keys = append(keys, g.keys...)
		}
	}
	return keys
}
