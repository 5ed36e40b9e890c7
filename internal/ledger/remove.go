package ledger

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/api"
)

// This file removes at SSLCI what the marks (marks.go) say this Caddy made
// and no longer needs: `caddy sslci prune` for the whole account, and
// delete_replaced for the certificates one renewal replaced. Both go
// through RemoveUnderLocks.

// Removal is one record removed (or, for a dry run, to remove).
type Removal struct {
	Type    string   `json:"type"` // api.RecordOrder or api.RecordCertificate
	ID      int64    `json:"id"`
	Domains []string `json:"domains,omitempty"`
	Mark    string   `json:"mark,omitempty"`
	Done    bool     `json:"done"`
	Error   string   `json:"error,omitempty"`
	Skipped string   `json:"skipped,omitempty"` // why it was left alone
}

// Describe names the record: "order 12 (a.test)".
func (r Removal) Describe() string {
	what := "order"
	if r.Type == api.RecordCertificate {
		what = "certificate"
	}
	s := fmt.Sprintf("%s %d", what, r.ID)
	if len(r.Domains) > 0 {
		s += " (" + strings.Join(r.Domains, ",") + ")"
	}
	return s
}

// Mark lists the account and marks each record. With only set, that one
// stored certificate is what the listing is matched with (a renewal's, for
// delete_replaced), else every certificate this issuer stores.
func (l *Ledger) Mark(ctx context.Context, only *Leaf) (*Marked, error) {
	list, err := l.Client.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the account: %w", err)
	}
	var leaves []Leaf
	if only != nil {
		leaves = []Leaf{*only}
	} else if leaves, err = l.StoredLeaves(ctx, nil); err != nil {
		return nil, fmt.Errorf("reading the certificates in storage: %w", err)
	}
	orders, certs, err := l.Records(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the ledger: %w", err)
	}
	return mark(list, orders, certs, leaves, time.Now()), nil
}

// Prunables are the records prune removes: marked superseded, refused or
// unused.
func Prunables(m *Marked) []Removal {
	var todo []Removal
	for _, o := range m.PendingOrders {
		if Prunable(o.Mark) {
			todo = append(todo, Removal{Type: api.RecordOrder, ID: o.ID, Domains: o.Domains, Mark: o.Mark})
		}
	}
	for _, c := range m.Certificates {
		if Prunable(c.Mark) {
			todo = append(todo, Removal{Type: api.RecordCertificate, ID: c.ID, Domains: c.Domains, Mark: c.Mark})
		}
	}
	return todo
}

// Prune removes the account's prunable records: only what the ledger
// proves this Caddy created, never a certificate in storage. A dry run
// removes nothing and says what would go.
func (l *Ledger) Prune(ctx context.Context, dryRun bool) ([]Removal, error) {
	m, err := l.Mark(ctx, nil)
	if err != nil {
		return nil, err
	}
	todo := Prunables(m)
	if dryRun || len(todo) == 0 {
		return todo, nil
	}
	var names []string
	for _, r := range todo {
		names = append(names, NormalNames(r.Domains)...)
	}
	return l.RemoveUnderLocks(ctx, names, nil, Prunables)
}

// replacedBy picks the certificates prune would delete as superseded that
// have exactly the renewed names. One alike to the second (same names and
// end_time) as another listed certificate is left alone: which one is ours
// is not known (classify already leaves such twins unmarked; this keeps
// the deletion safe whatever marks the listing carries).
func replacedBy(m *Marked, names []string) []Removal {
	type twin struct {
		names   string
		endTime int64
	}
	alike := map[twin]int{}
	endTime := map[int64]int64{}
	for _, c := range m.Certificates {
		alike[twin{strings.Join(NormalNames(c.Domains), ","), c.EndTime}]++
		endTime[c.ID] = c.EndTime
	}
	var out []Removal
	for _, r := range Prunables(m) {
		if r.Type == api.RecordCertificate && r.Mark == MarkSuperseded && slices.Equal(NormalNames(r.Domains), names) &&
			alike[twin{strings.Join(names, ","), endTime[r.ID]}] == 1 {
			out = append(out, r)
		}
	}
	return out
}

// DeleteReplaced deletes at SSLCI the certificates that the renewed one,
// stored at certKey, replaced: superseded ones with exactly its names.
func (l *Ledger) DeleteReplaced(ctx context.Context, certKey string) ([]Removal, error) {
	renewed, err := readStored(ctx, l.Storage(), certKey)
	switch {
	case err != nil:
		return nil, err
	case renewed == nil:
		return nil, fmt.Errorf("no certificate stored at %s", certKey)
	case renewed.Damaged:
		return nil, fmt.Errorf("the certificate stored at %s does not parse: %w", certKey, errDamaged)
	}
	return l.RemoveUnderLocks(ctx, renewed.Names, renewed, func(m *Marked) []Removal { return replacedBy(m, renewed.Names) })
}

// LockWait bounds the wait of prune, delete_replaced and the sweep for
// certmagic's locks of the names involved (a variable for tests).
var LockWait = 10 * time.Second

// RemoveUnderLocks removes the records pick chooses from a listing (see
// Mark for only) made under certmagic's issue lock of every name given, so
// that it never races an issuance of a running Caddy on the same storage.
// certmagic holds a name's lock through all its retries: what involves a
// name whose lock stays held is left alone, and so is what the listing
// under the locks shows of a name whose lock was not taken (it became
// removable meanwhile, as a renewal wrote its new certificate).
func (l *Ledger) RemoveUnderLocks(ctx context.Context, names []string, only *Leaf, pick func(*Marked) []Removal) ([]Removal, error) {
	locked, unlock := l.lockNames(ctx, names)
	defer unlock()

	m, err := l.Mark(ctx, only)
	if err != nil {
		return nil, err
	}
	todo := pick(m)
	done := map[string]bool{}
	for i := range todo {
		r := &todo[i]
		if j := slices.IndexFunc(r.Domains, func(d string) bool { return !locked[NormalName(d)] }); j >= 0 {
			r.Skipped = "an issuance of " + r.Domains[j] + " holds its lock"
			if !slices.Contains(names, NormalName(r.Domains[j])) {
				r.Skipped = "it became removable while the locks were taken, and " + r.Domains[j] + "'s lock was not: left for the next prune"
			}
			continue
		}
		if err := l.Delete(ctx, r.Type, r.ID); err != nil {
			r.Error = err.Error()
			continue
		}
		r.Done = true
		done[objectKey(r.Type, r.ID)] = true
	}
	for _, key := range m.view.resolved(done) {
		l.Drop(ctx, key)
	}
	return todo, nil
}

// lockNames takes certmagic's issue lock of each of names, waiting
// LockWait at most, for all of them: certmagic holds a name's lock through
// all the retries of a failing issuance, for days, and a wait without end
// would hold the locks already taken meanwhile, stopping their renewals.
// It returns the names locked, and unlock, which releases them.
func (l *Ledger) lockNames(ctx context.Context, names []string) (locked map[string]bool, unlock func()) {
	storage := l.Storage()
	lockCtx, cancel := context.WithTimeout(ctx, LockWait)
	defer cancel()
	locked = map[string]bool{}
	for _, name := range slices.Compact(slices.Sorted(slices.Values(names))) {
		if storage.Lock(lockCtx, IssueLock(name)) == nil {
			locked[name] = true
		}
	}
	return locked, func() {
		for name := range locked {
			storage.Unlock(context.WithoutCancel(ctx), IssueLock(name)) //nolint:errcheck // certmagic's storage logs it
		}
	}
}

// TryLock takes certmagic's lock name if it is free, without waiting for
// it to be released: for what runs where waiting could stall serving (a
// repair inside certmagic's load, which may hold its certificate cache),
// or would wait for days (a name whose issuance keeps failing). A storage
// without TryLock is given a second. unlock releases it.
func TryLock(ctx context.Context, storage certmagic.Storage, name string) (unlock func(), ok bool) {
	var err error
	if tl, isTry := storage.(certmagic.TryLocker); isTry {
		ok, err = tl.TryLock(ctx, name)
	} else {
		lockCtx, cancel := context.WithTimeout(ctx, time.Second)
		err = storage.Lock(lockCtx, name)
		cancel()
		ok = err == nil
	}
	if err != nil || !ok {
		return nil, false
	}
	return func() {
		storage.Unlock(context.WithoutCancel(ctx), name) //nolint:errcheck // certmagic's storage logs it
	}, true
}
