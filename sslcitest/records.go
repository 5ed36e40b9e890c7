package sslcitest

import (
	"fmt"
	"net/http"
	"strings"
)

type listResponse struct {
	Status        bool        `json:"status"`
	Certificates  []certJSON  `json:"certificates"`
	PendingOrders []orderJSON `json:"pending_orders"`
}

// certJSON lists a certificate. Whether domains is one name or a list for
// SAN certificates is not documented; it is comma-separated here.
type certJSON struct {
	ID      int64  `json:"crt_id"`
	Domains string `json:"domains"`
	AddTime int64  `json:"add_time"`
	EndTime int64  `json:"end_time"`
}

type orderJSON struct {
	ID      int64  `json:"order_id"`
	Domains string `json:"domains"`
	Status  string `json:"status"`
}

// list is GET: the account's certificates and its pending orders only
// (verified and deleted orders are not pending).
func (s *Server) list(c *call) (any, error) {
	s.mu.Lock()
	certs := s.store.certificates(c.account)
	orders := s.store.pendingOrders(c.account)
	s.mu.Unlock()
	resp := listResponse{Status: true, Certificates: []certJSON{}, PendingOrders: []orderJSON{}}
	for _, ct := range certs {
		resp.Certificates = append(resp.Certificates, certJSON{
			ID:      ct.ID,
			Domains: strings.Join(ct.Domains, ","),
			AddTime: ct.AddTime.Unix(),
			EndTime: ct.EndTime.Unix(),
		})
	}
	for _, o := range orders {
		resp.PendingOrders = append(resp.PendingOrders, orderJSON{ID: o.ID, Domains: o.Domain, Status: o.Status})
	}
	return resp, nil
}

// delete is DELETE: remove a certificate record (no revocation is
// documented) or cancel an order. Either record is gone afterwards, so a
// second delete is "no such ...". Deleting an order does not undo a
// verification already confirmed: that belongs to the account.
func (s *Server) delete(c *call) (any, error) {
	typ, err := c.p.requiredStr("type")
	if err != nil {
		return nil, err
	}
	if typ != "ssl" && typ != "order" {
		return nil, badRequest("invalid parameter type: %q (use ssl or order)", typ)
	}
	id, ok, err := c.p.integer("id")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, badRequest("missing parameter id")
	}
	forbidden := &apiError{http.StatusForbidden, "the record does not belong to you"}

	s.mu.Lock()
	defer s.mu.Unlock()
	if typ == "ssl" {
		ct := s.store.certs[id]
		switch {
		case ct == nil:
			return nil, badRequest("no such certificate: %d", id)
		case ct.owner != c.account:
			return nil, forbidden
		}
		delete(s.store.certs, id)
		return deleted(fmt.Sprintf("certificate %d deleted", id)), nil
	}
	o := s.store.orders[id]
	switch {
	case o == nil:
		return nil, badRequest("no such order: %d", id)
	case o.owner != c.account:
		return nil, forbidden
	}
	delete(s.store.orders, id)
	return deleted(fmt.Sprintf("order %d cancelled", id)), nil
}

// deleted is the assumed DELETE success body (not documented).
func deleted(msg string) map[string]any {
	return map[string]any{"status": true, "message": msg}
}
