package sslcitest_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// listed is the GET answer with its records' fields kept raw, to check
// names and JSON types exactly.
type listed struct {
	Status        bool                         `json:"status"`
	Certificates  []map[string]json.RawMessage `json:"certificates"`
	PendingOrders []map[string]json.RawMessage `json:"pending_orders"`
}

func getList(t *testing.T, s *sslcitest.Server) listed {
	t.Helper()
	r := do(t, s, "GET", s.Token(), nil)
	wantOK(t, r)
	var l listed
	if err := json.Unmarshal(r.raw, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// fields checks rec has exactly the documented fields, and decodes it.
func fields(t *testing.T, rec map[string]json.RawMessage, want map[string]any) {
	t.Helper()
	if got := slices.Sorted(maps.Keys(rec)); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("fields %v, want %v", got, slices.Sorted(maps.Keys(want)))
	}
	for k, w := range want {
		wantJSON, _ := json.Marshal(w) // integers as integers, not 1.7e+09
		if !bytes.Equal(rec[k], wantJSON) {
			t.Errorf("%s = %s, want %s", k, rec[k], wantJSON)
		}
	}
}

// TestListDocumentedShape: exactly the documented fields, with ids and
// Unix-second times as JSON integers; cancelled orders, verified orders
// and deleted certificates are gone.
func TestListDocumentedShape(t *testing.T) {
	issued := time.Date(2026, 5, 13, 8, 30, 0, 0, time.UTC)
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr(), Now: func() time.Time { return issued }})
	tok := s.Token()
	verifyHTTP(t, s, tok, "a.test", ch)
	verifyHTTP(t, s, tok, "b.test", ch)
	f := finalize(t, s, tok, []string{"a.test", "b.test"}, nil)
	s.Advance(time.Hour)
	finalize(t, s, tok, []string{"b.test"}, nil)
	keep := orderID(t, do(t, s, "POST", tok, map[string]any{"domain": "c.test", "method": "dns"}))
	cancel := orderID(t, do(t, s, "POST", tok, map[string]any{"domain": "d.test", "method": "http"}))

	l := getList(t, s)
	if len(l.Certificates) != 2 || len(l.PendingOrders) != 2 {
		t.Fatalf("list %+v", l)
	}
	fields(t, l.Certificates[0], map[string]any{"crt_id": 1, "domains": "a.test,b.test", "add_time": issued.Unix(), "end_time": issued.Unix() + 90*86400})
	if f.leaf.NotAfter.Unix() != issued.Unix()+90*86400 {
		t.Errorf("end_time is not the certificate's NotAfter %v", f.leaf.NotAfter)
	}
	later := issued.Add(time.Hour).Unix()
	fields(t, l.Certificates[1], map[string]any{"crt_id": 2, "domains": "b.test", "add_time": later, "end_time": later + 90*86400})
	fields(t, l.PendingOrders[0], map[string]any{"order_id": keep, "domains": "c.test", "status": "pending"})
	fields(t, l.PendingOrders[1], map[string]any{"order_id": cancel, "domains": "d.test", "status": "pending"})

	wantOK(t, do(t, s, "DELETE", tok, map[string]any{"type": "order", "id": cancel}))
	wantOK(t, do(t, s, "DELETE", tok, map[string]any{"type": "ssl", "id": 1}))
	l = getList(t, s)
	if len(l.Certificates) != 1 || len(l.PendingOrders) != 1 {
		t.Fatalf("after delete: %+v", l)
	}
	fields(t, l.Certificates[0], map[string]any{"crt_id": 2, "domains": "b.test", "add_time": later, "end_time": later + 90*86400})
	fields(t, l.PendingOrders[0], map[string]any{"order_id": keep, "domains": "c.test", "status": "pending"})
}
