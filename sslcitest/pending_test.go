package sslcitest_test

import (
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

func TestPendingRetryAfter(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr(), Faults: sslcitest.FaultRates{PendingRetryAfter: 1500 * time.Millisecond}})
	r := do(t, s, "POST", s.Token(), map[string]any{"domain": "a.test", "method": "http"})
	wantOK(t, r)
	v := verification(t, r)
	ch.set("a.test", v["file_path"], v["content"])
	confirm := map[string]any{"domain": "a.test"}

	s.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1)
	if r := do(t, s, "PUT", s.Token(), confirm); r.body["status"] != "pending" || r.header.Get("Retry-After") != "2" {
		t.Errorf("pending: %d %v %s", r.status, r.header, r.raw)
	}
	// Only on pending answers.
	if r := do(t, s, "PUT", s.Token(), confirm); r.body["status"] != true || r.header.Get("Retry-After") != "" {
		t.Errorf("verified: %v %s", r.header, r.raw)
	}

	// Default: none.
	s = newServer(t, sslcitest.Options{})
	wantOK(t, do(t, s, "POST", s.Token(), map[string]any{"domain": "a.test", "method": "http"}))
	s.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1)
	if r := do(t, s, "PUT", s.Token(), confirm); r.body["status"] != "pending" || r.header.Get("Retry-After") != "" {
		t.Errorf("pending: %v %s", r.header, r.raw)
	}
}

// TestRandomPending: the dice give pending answers to confirms only.
func TestRandomPending(t *testing.T) {
	s := newServer(t, sslcitest.Options{Faults: sslcitest.FaultRates{Pending: 1}})
	wantOK(t, do(t, s, "GET", s.Token(), nil))
	wantOK(t, do(t, s, "POST", s.Token(), map[string]any{"domain": "a.test", "method": "http"}))
	for range 3 {
		if r := do(t, s, "PUT", s.Token(), map[string]any{"domain": "a.test"}); r.body["status"] != "pending" {
			t.Fatalf("got %d %s", r.status, r.raw)
		}
	}
	if e := lastRequest(t, s); e.Fault != sslcitest.FaultPending {
		t.Errorf("logged %+v", e)
	}
}
