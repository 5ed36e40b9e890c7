package ledger

import (
	"fmt"
	"slices"
	"time"

	"github.com/sslci/caddy-sslci/api"
)

// This file says the ownership rule (classify) record by record, as
// `caddy sslci list` shows it and prune and delete_replaced act on it:
// one mark per listed order and certificate.

// Marks of a record at SSLCI, as they appear in `caddy sslci list --json`.
const (
	MarkServed     = "served"
	MarkSuperseded = "superseded"
	MarkRefused    = "refused"
	MarkUnused     = "unused"
	MarkInProgress = "in_progress"
	MarkForeign    = "not_from_this_caddy"
)

// MarkText is each mark in words.
var MarkText = map[string]string{
	MarkServed:     "served by this Caddy",
	MarkSuperseded: "superseded",
	MarkRefused:    "refused by the checks",
	MarkUnused:     "created by this Caddy, unused",
	MarkInProgress: "in progress",
	MarkForeign:    "not from this Caddy",
}

// Prunable says which marks prune removes.
func Prunable(mark string) bool {
	return mark == MarkSuperseded || mark == MarkRefused || mark == MarkUnused
}

// inProgressWindow: a record of ours younger than this may belong to an
// issuance still running (a verification may take verification_timeout,
// 5 minutes by default); list says "in progress" and prune leaves it.
const inProgressWindow = 15 * time.Minute

// ListedCertificate is a certificate SSLCI lists, marked.
type ListedCertificate struct {
	ID      int64    `json:"crt_id"`
	Domains []string `json:"domains"`
	AddTime int64    `json:"add_time"` // Unix seconds, as SSLCI says
	EndTime int64    `json:"end_time"`
	Mark    string   `json:"mark"`
	Note    string   `json:"note,omitempty"`
}

// ListedOrder is a pending order SSLCI lists, marked.
type ListedOrder struct {
	ID      int64    `json:"order_id"`
	Domains []string `json:"domains"`
	Status  string   `json:"status"`
	Mark    string   `json:"mark"`
}

// Marked is one list of the account, each record marked, and what prune
// needs to drop the records a removal resolves.
type Marked struct {
	Certificates  []ListedCertificate
	PendingOrders []ListedOrder
	view          *view
}

// view is classify's answer for one list, with what the records say of
// each object (when, refused).
type view struct {
	o       *ownership
	sentAt  map[string]time.Time // by object: the newest request of ours for it
	refused map[string]bool
	now     time.Time
}

func objectKey(recordType string, id int64) string { return fmt.Sprintf("%s/%d", recordType, id) }

// mark applies classify to list, with the ledger's records and the leaves
// in storage. The commands run in a process of their own: no request of
// theirs is in flight, and prune holds certmagic's locks.
func mark(list *api.List, orders []OrderRecord, certs []CertRecord, leaves []Leaf, now time.Time) *Marked {
	v := &view{sentAt: map[string]time.Time{}, refused: map[string]bool{}, now: now}
	v.o = classify(list, orders, certs, leaves, func(string) bool { return false }, now)
	type rec struct {
		sentAt time.Time
		state  string
	}
	byKey := map[string]rec{}
	for _, r := range orders {
		byKey[r.Key] = rec{r.SentAt, r.State}
	}
	for _, r := range certs {
		byKey[r.Key] = rec{r.SentAt, r.State}
	}
	for _, g := range v.o.groups {
		for _, id := range g.ids {
			obj := objectKey(g.recordType, id)
			for _, k := range g.keys {
				r := byKey[k]
				if r.sentAt.After(v.sentAt[obj]) {
					v.sentAt[obj] = r.sentAt
				}
				v.refused[obj] = v.refused[obj] || r.state == StateRefused
			}
		}
	}

	m := &Marked{Certificates: []ListedCertificate{}, PendingOrders: []ListedOrder{}, view: v}
	for _, c := range list.Certificates {
		mk, note := v.markCertificate(c, list.Certificates, leaves)
		m.Certificates = append(m.Certificates, ListedCertificate{
			ID: c.ID, Domains: c.Domains, AddTime: c.Added.Unix(), EndTime: c.Expires.Unix(), Mark: mk, Note: note,
		})
	}
	for _, o := range list.PendingOrders {
		m.PendingOrders = append(m.PendingOrders, ListedOrder{ID: o.ID, Domains: o.Domains, Status: o.Status, Mark: v.markOrder(o)})
	}
	return m
}

// markCertificate marks c. A certificate in storage is served, whoever made
// it (the note says where); of the others, only those the ledger proves
// ours get any other mark than "not from this Caddy".
func (v *view) markCertificate(c api.CertificateInfo, all []api.CertificateInfo, leaves []Leaf) (mark, note string) {
	if leaf := storedAs(leaves, NormalNames(c.Domains), c.Expires.Unix()); leaf != nil {
		return MarkServed, leaf.Key
	}
	obj := objectKey(api.RecordCertificate, c.ID)
	switch v.o.Certs[c.ID] {
	case ownerHistory:
		for _, other := range all {
			names := NormalNames(other.Domains)
			if storedAs(leaves, names, other.Expires.Unix()) != nil && slices.Equal(names, NormalNames(c.Domains)) {
				note = fmt.Sprintf("by %d", other.ID)
			}
		}
		return MarkSuperseded, note
	case ownerUnstored, ownerLost:
		switch {
		case v.refused[obj]:
			return MarkRefused, ""
		case v.now.Sub(v.sentAt[obj]) < inProgressWindow:
			return MarkInProgress, ""
		}
		return MarkUnused, ""
	}
	if key, ok := v.o.damagedFor(NormalNames(c.Domains)); ok {
		return MarkForeign, "not known: the stored certificate of these names does not parse (" + key + ")"
	}
	return MarkForeign, "" // not ours, or not provably (classify's ownerUnknown)
}

func (v *view) markOrder(o api.OrderInfo) string {
	switch v.o.Orders[o.ID] {
	case ownerRecorded, ownerLost:
		if v.now.Sub(v.sentAt[objectKey(api.RecordOrder, o.ID)]) < inProgressWindow {
			return MarkInProgress
		}
		return MarkUnused
	}
	return MarkForeign
}

// resolved returns the ledger records that have nothing left to reconcile
// once the objects in done are removed: those of the groups all of whose
// objects were removed.
func (v *view) resolved(done map[string]bool) []string {
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
