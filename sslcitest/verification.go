package sslcitest

import (
	"net/http"
)

const (
	methodHTTP = "http"
	methodDNS  = "dns"
)

// verificationJSON is the documented verification object for http, and for
// dns the assumed one: the TXT value in content, the record name in record.
type verificationJSON struct {
	Method   string `json:"method"`
	Token    string `json:"token"`
	Content  string `json:"content"`
	FilePath string `json:"file_path,omitempty"`
	URL      string `json:"url,omitempty"`
	Record   string `json:"record,omitempty"`
	Type     string `json:"type,omitempty"`
}

type requestResponse struct {
	Status       bool             `json:"status"`
	Domain       string           `json:"domain"`
	OrderID      int64            `json:"order_id"`
	Verification verificationJSON `json:"verification"`
}

// confirmResponse is the assumed PUT success body (not documented).
type confirmResponse struct {
	Status  bool   `json:"status"`
	Domain  string `json:"domain"`
	OrderID int64  `json:"order_id"`
	Message string `json:"message"`
}

// requestVerification is POST: a new pending order for one domain.
func (s *Server) requestVerification(c *call) (any, error) {
	domain, err := c.p.domain()
	if err != nil {
		return nil, err
	}
	method, err := c.p.requiredStr("method")
	if err != nil {
		return nil, err
	}
	if method != methodHTTP && method != methodDNS {
		return nil, badRequest("invalid parameter method: %q (use http or dns)", method)
	}
	// Wildcards are not documented; as in ACME only DNS can prove them.
	if isWildcard(domain) && method == methodHTTP {
		return nil, badRequest("invalid parameter method: the wildcard %s can only be verified with dns", domain)
	}
	token := randomToken()
	keyAuth := token + "." + s.thumb
	s.mu.Lock()
	o := s.store.addOrder(c.account, domain, method, token, keyAuth)
	s.mu.Unlock()

	v := verificationJSON{Method: method, Token: token}
	if method == methodHTTP {
		v.Content = keyAuth
		v.FilePath = challengePath(token)
		v.URL = "http://" + domain + v.FilePath
	} else {
		v.Content = dnsValue(keyAuth)
		v.Record = dnsRecord(domain)
		v.Type = "TXT"
	}
	return requestResponse{Status: true, Domain: domain, OrderID: o.ID, Verification: v}, nil
}

// confirm is PUT: check the order's challenge; on success the account has
// the domain verified as of now. A failed check leaves the order pending so
// that the client can fix the file or record and confirm again.
func (s *Server) confirm(c *call) (any, error) {
	domain, err := c.p.domain()
	if err != nil {
		return nil, err
	}
	method, _, err := c.p.str("method")
	if err != nil {
		return nil, err
	}
	if method != "" && method != methodHTTP && method != methodDNS {
		return nil, badRequest("invalid parameter method: %q (use http or dns)", method)
	}
	id, byID, err := c.p.integer("order_id")
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	o, err := s.findOrder(c.account, domain, method, id, byID)
	var snap order
	if o != nil {
		snap = *o
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	done := confirmResponse{Status: true, Domain: domain, OrderID: snap.ID, Message: "domain verified"}
	// Confirming a verified order again succeeds: a client that lost the
	// first answer may retry.
	if snap.Status == statusVerified {
		return done, nil
	}
	if c.fault() == FaultPending {
		if d := s.faults.rates.PendingRetryAfter; d > 0 {
			c.header.Set("Retry-After", retryAfterSeconds(d))
		}
		return map[string]any{"status": "pending", "message": "verification in progress"}, nil
	}

	if snap.Method == methodDNS {
		err = s.checkDNS(c.ctx, domain, dnsValue(snap.keyAuth))
	} else {
		err = s.checkHTTP(c.ctx, domain, snap.Token, snap.keyAuth)
	}
	if err != nil {
		return nil, badRequest("verification of %s failed: %v", domain, err)
	}

	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	o = s.store.orders[snap.ID]
	if o == nil {
		return nil, badRequest("order %d was deleted during the check", snap.ID)
	}
	o.Status = statusVerified
	s.store.verified[c.account][domain] = now
	return done, nil
}

// findOrder is the order a confirmation is about: the one named by
// order_id, else the newest pending one for the domain and method (default
// http, as documented). s.mu must be held.
func (s *Server) findOrder(account, domain, method string, id int64, byID bool) (*order, error) {
	if !byID {
		if method == "" {
			method = methodHTTP
		}
		o := s.store.newestPending(account, domain, method)
		if o == nil {
			return nil, badRequest("no pending %s verification for %s: request one with POST first", method, domain)
		}
		return o, nil
	}
	o := s.store.orders[id]
	switch {
	case o == nil:
		return nil, badRequest("no such order: %d", id)
	case o.owner != account:
		return nil, &apiError{http.StatusForbidden, "order does not belong to you"}
	case o.Domain != domain:
		return nil, badRequest("order %d is for %s, not %s", id, o.Domain, domain)
	case method != "" && o.Method != method:
		return nil, badRequest("order %d is a %s verification, not %s", id, o.Method, method)
	}
	return o, nil
}
