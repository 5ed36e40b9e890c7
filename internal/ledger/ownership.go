package ledger

import (
	"path"
	"slices"
	"strings"
	"time"

	"github.com/sslci/caddy-sslci/api"
)

// This file is the ownership rule: which of the orders and certificates
// SSLCI lists this Caddy made, decided only from its ledger and its
// storage (classify). reconcile.go acts on it; marks.go says it to
// `caddy sslci list`, prune and delete_replaced.

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

// group is objects at SSLCI to cancel or delete together, and the records
// resolved once they are all gone.
type group struct {
	recordType string  // api.RecordOrder or api.RecordCertificate
	ids        []int64 // none: the records are resolved already
	keys       []string
	resumable  *OrderRecord // a recorded pending order with its challenge
}

// ownership is classify's answer: an owner for every listed order and
// certificate, the groups to settle and the records now seen stored.
type ownership struct {
	Orders map[int64]owner
	Certs  map[int64]owner
	groups []group
	stored []CertRecord
	// ambiguous: candidates for lost answers outnumbering them: another
	// client made some; none is touched.
	ambiguous []int64
	// damaged: the storage keys of Damaged leaves, by their folder (a set
	// of names' safe names key): the set's records and certificates are
	// left alone.
	damaged map[string]string
}

// damagedFor is the key of the Damaged leaf stored for names, if any.
func (o *ownership) damagedFor(names []string) (key string, ok bool) {
	key, ok = o.damaged[safe(NamesKey(names))]
	return key, ok
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
// domains they are for; so are the records, and the certificates, of a
// set of names whose stored certificate does not parse (a Damaged leaf:
// which certificate it was is unknown).
func classify(list *api.List, orders []OrderRecord, certs []CertRecord, stored []Leaf, live func(string) bool, now time.Time) *ownership {
	o := &ownership{Orders: make(map[int64]owner), Certs: make(map[int64]owner), damaged: make(map[string]string)}
	for _, s := range stored {
		if s.Damaged {
			o.damaged[path.Base(path.Dir(s.Key))] = s.Key
		}
	}
	for _, p := range list.PendingOrders {
		o.Orders[p.ID] = ownerUnknown
	}
	recorded := make(map[int64]bool)
	for _, r := range orders {
		recorded[r.OrderID] = r.OrderID != 0
	}
	lost := make(map[string][]OrderRecord)
	busy := make(map[string]bool)
	for _, r := range orders {
		switch {
		case live(r.Key):
			busy[r.Domain] = true
		case r.OrderID == 0:
			lost[r.Domain] = append(lost[r.Domain], r)
		default:
			g := group{recordType: api.RecordOrder, keys: []string{r.Key}}
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
		floor := slices.MinFunc(recs, func(a, b OrderRecord) int { return int(a.Floor - b.Floor) }).Floor
		var cands []int64
		for _, p := range list.PendingOrders {
			if p.ID > floor && !recorded[p.ID] && sameNames(p.Domains, []string{domain}) {
				cands = append(cands, p.ID)
			}
		}
		keys, oldest := keysOf(recs, func(r OrderRecord) (string, time.Time) { return r.Key, r.SentAt })
		o.settleLost(api.RecordOrder, cands, len(recs), keys, oldest, o.Orders, now)
	}

	isStored := func(names []string, notAfter int64) bool { return storedAs(stored, names, notAfter) != nil }
	isDamaged := func(names []string) bool { _, ok := o.damagedFor(names); return ok }
	for _, c := range list.Certificates {
		o.Certs[c.ID] = ownerUnknown
		if isStored(NormalNames(c.Domains), c.Expires.Unix()) {
			o.Certs[c.ID] = ownerStored
		}
	}
	matching := func(r CertRecord) (ids []int64) {
		for _, c := range list.Certificates {
			if sameNames(c.Domains, r.Names) && (c.ID == r.CertID || c.Expires.Unix() == r.NotAfter.Unix()) {
				ids = append(ids, c.ID)
			}
		}
		return ids
	}
	lostCerts := make(map[string][]CertRecord)
	busy = make(map[string]bool)
	for _, r := range certs {
		set := strings.Join(r.Names, ",")
		switch {
		case live(r.Key) || isDamaged(r.Names):
			busy[set] = true
			continue
		case r.NotAfter.IsZero():
			lostCerts[set] = append(lostCerts[set], r)
			continue
		case isStored(r.Names, r.NotAfter.Unix()):
			if r.State != StateStored {
				o.stored = append(o.stored, r)
			}
			continue
		}
		ids := matching(r)
		switch {
		case len(ids) == 0 || (r.State == StateStored && !now.Before(r.NotAfter)):
			o.groups = append(o.groups, group{keys: []string{r.Key}}) // gone, or expired history
		case len(ids) > 1:
			// Several certificates alike to the second: which is ours is
			// not known; all are left alone.
		case r.State == StateStored:
			if o.Certs[ids[0]] == ownerUnknown {
				o.Certs[ids[0]] = ownerHistory
			}
		case o.Certs[ids[0]] == ownerUnknown:
			o.Certs[ids[0]] = ownerUnstored
			o.groups = append(o.groups, group{recordType: api.RecordCertificate, ids: ids, keys: []string{r.Key}})
		}
	}
	for set, recs := range lostCerts {
		if busy[set] {
			continue
		}
		first := slices.MinFunc(recs, func(a, b CertRecord) int { return a.SentAt.Compare(b.SentAt) })
		floor := slices.MinFunc(recs, func(a, b CertRecord) int { return int(a.Floor - b.Floor) }).Floor
		var cands []int64
		for _, c := range list.Certificates {
			if c.ID > floor && o.Certs[c.ID] == ownerUnknown && sameNames(c.Domains, recs[0].Names) &&
				!c.Added.Before(first.SentAt.Add(-certSkew)) && !c.Added.After(now.Add(certSkew)) &&
				!slices.ContainsFunc(certs, func(r CertRecord) bool { return slices.Contains(matching(r), c.ID) && !r.NotAfter.IsZero() }) {
				cands = append(cands, c.ID)
			}
		}
		keys, oldest := keysOf(recs, func(r CertRecord) (string, time.Time) { return r.Key, r.SentAt })
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
