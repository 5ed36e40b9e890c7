package sslcitest

import (
	"crypto/x509"
	"maps"
	"slices"
	"time"
)

// Order is a verification request, as the simulator holds it.
type Order struct {
	ID     int64
	Domain string
	Method string // "http" or "dns"
	Status string // "pending" or "verified"; deleted orders are gone
	Token  string // the challenge token
}

// Certificate is an issued certificate, as the simulator holds it.
type Certificate struct {
	ID      int64
	Domains []string
	AddTime time.Time
	EndTime time.Time
	Leaf    *x509.Certificate // what finalize returned (before any FaultBrokenPEM)
}

const (
	statusPending  = "pending"
	statusVerified = "verified"
)

// The documentation does not say how ids are numbered. Orders and
// certificates count from different bases so that a client sending an
// order_id as a crt_id (or the reverse) gets "no such ..." instead of
// silently hitting another record.
const (
	firstOrderID = 1001
	firstCertID  = 1
)

type order struct {
	Order
	owner   string // account token
	keyAuth string
}

type certRecord struct {
	Certificate
	owner string
}

// store holds the accounts' state. It does no locking: Server.mu guards it.
type store struct {
	// verified maps account token -> domain -> when it was confirmed. The
	// verification belongs to the account and the domain, not to the
	// order: deleting the order afterwards does not undo it.
	verified map[string]map[string]time.Time
	orders   map[int64]*order
	certs    map[int64]*certRecord
	lastID   struct{ order, cert int64 }
}

func newStore(tokens []string) store {
	st := store{
		verified: make(map[string]map[string]time.Time),
		orders:   make(map[int64]*order),
		certs:    make(map[int64]*certRecord),
	}
	for _, t := range tokens {
		st.verified[t] = make(map[string]time.Time)
	}
	st.lastID.order = firstOrderID - 1
	st.lastID.cert = firstCertID - 1
	return st
}

func (st *store) isAccount(token string) bool {
	_, ok := st.verified[token]
	return ok
}

func (st *store) addOrder(owner, domain, method, token, keyAuth string) *order {
	st.lastID.order++
	o := &order{
		Order:   Order{ID: st.lastID.order, Domain: domain, Method: method, Status: statusPending, Token: token},
		owner:   owner,
		keyAuth: keyAuth,
	}
	st.orders[o.ID] = o
	return o
}

// newestPending is the account's newest pending order for domain and method.
func (st *store) newestPending(owner, domain, method string) *order {
	var newest *order
	for _, o := range st.orders {
		if o.owner == owner && o.Domain == domain && o.Method == method &&
			o.Status == statusPending && (newest == nil || o.ID > newest.ID) {
			newest = o
		}
	}
	return newest
}

func (st *store) addCert(owner string, c Certificate) int64 {
	st.lastID.cert++
	c.ID = st.lastID.cert
	st.certs[c.ID] = &certRecord{Certificate: c, owner: owner}
	return c.ID
}

// pendingOrders are the account's pending orders by id.
func (st *store) pendingOrders(owner string) []Order {
	var list []Order
	for _, id := range slices.Sorted(maps.Keys(st.orders)) {
		if o := st.orders[id]; o.owner == owner && o.Status == statusPending {
			list = append(list, o.Order)
		}
	}
	return list
}

// certificates are the account's certificates by id.
func (st *store) certificates(owner string) []Certificate {
	var list []Certificate
	for _, id := range slices.Sorted(maps.Keys(st.certs)) {
		if c := st.certs[id]; c.owner == owner {
			cc := c.Certificate
			cc.Domains = slices.Clone(cc.Domains)
			list = append(list, cc)
		}
	}
	return list
}

// PendingOrders are the pending orders of the account with this token.
func (s *Server) PendingOrders(token string) []Order {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.store.pendingOrders(token)
}

// Certificates are the certificates of the account with this token.
func (s *Server) Certificates(token string) []Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.store.certificates(token)
}

// ExpireVerifications forgets every confirmed verification of every
// account, as if the verification window had passed.
func (s *Server) ExpireVerifications() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.store.verified {
		s.store.verified[t] = make(map[string]time.Time)
	}
}
