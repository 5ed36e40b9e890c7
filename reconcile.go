package sslci

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// This file reconciles the ledger (ledger.go) with SSLCI's list: it decides
// which listed orders and certificates this Caddy made (classify: the
// ownership rule), cancels the orders it no longer needs, deletes the
// certificates it made but does not store, and drops the records left with
// nothing to reconcile. It runs at the start of an Issue whose names have
// records, after an answer lost inside an Issue, and once in the
// background after the issuer is set up (sweep), under certmagic's lock of
// each name involved, so it never races an issuance of a live Caddy.

const (
	// certSkew bounds how far SSLCI's clock (add_time) and ours (sent_at)
	// may be apart.
	certSkew = 5 * time.Minute
	// unresolvedRetention: a record whose order or certificate cannot be
	// proven ours (another client made one like it meanwhile) is looked at
	// again for this long, then dropped, its object left alone.
	unresolvedRetention = 7 * 24 * time.Hour
)

// owner says what a listed order or certificate is to this Caddy.
type owner int

const (
	ownerUnknown  owner = iota // not from this Caddy, or not provably: always left alone
	ownerRecorded              // an order whose id this Caddy recorded
	ownerLost                  // ours, its answer lost: proven by the count rule
	ownerUnstored              // a certificate this Caddy obtained or refused, and does not store
	ownerStored                // the certificate of a leaf in this Caddy's storage
	ownerHistory               // a certificate this Caddy stored once, since superseded
)

func (o owner) String() string {
	return [...]string{"not from this Caddy", "ours", "ours (answer lost)", "ours, not stored", "stored", "superseded"}[o]
}

// storedLeaf is a certificate certmagic stores for this issuer.
type storedLeaf struct {
	Names    []string // sorted
	NotAfter time.Time
}

// group is objects at SSLCI to cancel or delete together, and the records
// resolved once they are all gone.
type group struct {
	recordType string  // api.RecordOrder or api.RecordCertificate
	ids        []int64 // none: the records are resolved already
	keys       []string
	resumable  *orderRecord // a recorded pending order with its challenge
}

// ownership is classify's answer: an owner for every listed order and
// certificate, the groups to settle and the records now seen stored.
type ownership struct {
	Orders map[int64]owner
	Certs  map[int64]owner
	groups []group
	stored []certRecord
	// ambiguous: candidates for lost answers outnumbering them: another
	// client made some; none is touched.
	ambiguous []int64
}

// classify applies the ownership rule. This Caddy owns only
//   - orders whose id it recorded from an answer;
//   - orders and certificates made by a request whose answer it lost: the
//     pending orders for that domain with an id above the request's floor
//     (assumption: SSLCI's ids increase, as in its examples), or the
//     certificates for exactly those names with an id above the floor and
//     add_time between sent_at and now (± certSkew), not matched by another
//     record, when there are no more of them than such lost requests;
//   - certificates matching a finalize record of its own by names and
//     end_time == the not_after it recorded;
//
// and never a certificate that a leaf in its storage matches. Records of
// requests in flight in this process (live) are left out, and so are the
// domains they are for.
func classify(list *api.List, orders []orderRecord, certs []certRecord, stored []storedLeaf, live func(string) bool, now time.Time) *ownership {
	o := &ownership{Orders: make(map[int64]owner), Certs: make(map[int64]owner)}
	for _, p := range list.PendingOrders {
		o.Orders[p.ID] = ownerUnknown
	}
	recorded := make(map[int64]bool)
	for _, r := range orders {
		recorded[r.OrderID] = r.OrderID != 0
	}
	lost := make(map[string][]orderRecord)
	busy := make(map[string]bool)
	for _, r := range orders {
		switch {
		case live(r.key):
			busy[r.Domain] = true
		case r.OrderID == 0:
			lost[r.Domain] = append(lost[r.Domain], r)
		default:
			g := group{recordType: api.RecordOrder, keys: []string{r.key}}
			if _, listed := o.Orders[r.OrderID]; listed {
				o.Orders[r.OrderID] = ownerRecorded
				g.ids = []int64{r.OrderID}
				if r.Chal != nil {
					g.resumable = &r
				}
			}
			o.groups = append(o.groups, g)
		}
	}
	for domain, recs := range lost {
		if busy[domain] {
			continue
		}
		floor := slices.MinFunc(recs, func(a, b orderRecord) int { return int(a.Floor - b.Floor) }).Floor
		var cands []int64
		for _, p := range list.PendingOrders {
			if p.ID > floor && !recorded[p.ID] && sameNames(p.Domains, []string{domain}) {
				cands = append(cands, p.ID)
			}
		}
		keys, oldest := keysOf(recs, func(r orderRecord) (string, time.Time) { return r.key, r.SentAt })
		o.settleLost(api.RecordOrder, cands, len(recs), keys, oldest, o.Orders, now)
	}

	isStored := func(names []string, notAfter int64) bool {
		return slices.ContainsFunc(stored, func(s storedLeaf) bool {
			return slices.Equal(s.Names, names) && s.NotAfter.Unix() == notAfter
		})
	}
	for _, c := range list.Certificates {
		o.Certs[c.ID] = ownerUnknown
		if isStored(normalNames(c.Domains), c.Expires.Unix()) {
			o.Certs[c.ID] = ownerStored
		}
	}
	matching := func(r certRecord) (ids []int64) {
		for _, c := range list.Certificates {
			if sameNames(c.Domains, r.Names) && (c.ID == r.CertID || c.Expires.Unix() == r.NotAfter.Unix()) {
				ids = append(ids, c.ID)
			}
		}
		return ids
	}
	lostCerts := make(map[string][]certRecord)
	busy = make(map[string]bool)
	for _, r := range certs {
		set := strings.Join(r.Names, ",")
		switch {
		case live(r.key):
			busy[set] = true
			continue
		case r.NotAfter.IsZero():
			lostCerts[set] = append(lostCerts[set], r)
			continue
		case isStored(r.Names, r.NotAfter.Unix()):
			if r.State != stateStored {
				o.stored = append(o.stored, r)
			}
			continue
		}
		ids := matching(r)
		switch {
		case len(ids) == 0 || (r.State == stateStored && !now.Before(r.NotAfter)):
			o.groups = append(o.groups, group{keys: []string{r.key}}) // gone, or expired history
		case r.State == stateStored:
			for _, id := range ids {
				if o.Certs[id] == ownerUnknown {
					o.Certs[id] = ownerHistory
				}
			}
		case len(ids) == 1 && o.Certs[ids[0]] == ownerUnknown:
			o.Certs[ids[0]] = ownerUnstored
			o.groups = append(o.groups, group{recordType: api.RecordCertificate, ids: ids, keys: []string{r.key}})
		}
		// Several certificates alike to the second: which is ours is not
		// known; all are left alone.
	}
	for set, recs := range lostCerts {
		if busy[set] {
			continue
		}
		first := slices.MinFunc(recs, func(a, b certRecord) int { return a.SentAt.Compare(b.SentAt) })
		floor := slices.MinFunc(recs, func(a, b certRecord) int { return int(a.Floor - b.Floor) }).Floor
		var cands []int64
		for _, c := range list.Certificates {
			if c.ID > floor && o.Certs[c.ID] == ownerUnknown && sameNames(c.Domains, recs[0].Names) &&
				!c.Added.Before(first.SentAt.Add(-certSkew)) && !c.Added.After(now.Add(certSkew)) &&
				!slices.ContainsFunc(certs, func(r certRecord) bool { return slices.Contains(matching(r), c.ID) && !r.NotAfter.IsZero() }) {
				cands = append(cands, c.ID)
			}
		}
		keys, oldest := keysOf(recs, func(r certRecord) (string, time.Time) { return r.key, r.SentAt })
		o.settleLost(api.RecordCertificate, cands, len(recs), keys, oldest, o.Certs, now)
	}
	return o
}

// settleLost applies the count rule to the candidates for n lost requests.
func (o *ownership) settleLost(recordType string, cands []int64, n int, keys []string, oldest time.Time, owners map[int64]owner, now time.Time) {
	switch {
	case len(cands) <= n:
		for _, id := range cands {
			owners[id] = ownerLost
		}
		o.groups = append(o.groups, group{recordType: recordType, ids: cands, keys: keys})
	default:
		o.ambiguous = append(o.ambiguous, cands...)
		if now.Sub(oldest) > unresolvedRetention {
			o.groups = append(o.groups, group{keys: keys}) // give up: left alone
		}
	}
}

func keysOf[R any](recs []R, f func(R) (string, time.Time)) ([]string, time.Time) {
	var keys []string
	var oldest time.Time
	for _, r := range recs {
		key, at := f(r)
		keys = append(keys, key)
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	return keys, oldest
}

func normalNames(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToLower(strings.TrimSuffix(n, "."))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func sameNames(listed, sorted []string) bool { return slices.Equal(normalNames(listed), sorted) }

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
	order func(orderRecord) bool
	cert  func(certRecord) bool
}

// forNames is every record about one of names: what an Issue for them
// may reconcile under certmagic's lock.
func forNames(names []string) scope {
	in := func(n string) bool { return slices.Contains(names, n) }
	return scope{
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
	allOrders, allCerts, err := iss.ledgerRecords(ctx)
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
// storage. Cleanup stops it.
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
		if err := storage.Lock(ctx, "issue_cert_"+name); err != nil {
			return err
		}
		defer storage.Unlock(context.WithoutCancel(ctx), "issue_cert_"+name) //nolint:errcheck // logged by certmagic's storage
	}
	_, err = iss.reconcile(ctx, forNames(names), nil)
	return err
}

// Cleanup stops the background sweep (caddy.CleanerUpper).
func (iss *Issuer) Cleanup() error {
	iss.ledger.mu.Lock()
	defer iss.ledger.mu.Unlock()
	if iss.ledger.stopped != nil {
		iss.ledger.stopped()
	}
	return nil
}

// Interface guard
var _ caddy.CleanerUpper = (*Issuer)(nil)
