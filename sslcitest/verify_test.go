package sslcitest_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sslci/caddy-sslci/sslcitest"
)

func TestHTTPCheckFailures(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr()})
	r := do(t, s, "POST", s.Token(), map[string]any{"domain": "a.test", "method": "http"})
	v := verification(t, r)
	confirm := map[string]any{"domain": "a.test", "order_id": orderID(t, r)}

	wantError(t, do(t, s, "PUT", s.Token(), confirm), 400, "got HTTP 404", v["url"])

	ch.set("a.test", v["file_path"], strings.Repeat("wrong ", 20))
	wantError(t, do(t, s, "PUT", s.Token(), confirm), 400, `body "wrong wrong`, "first 64 of 120 bytes", "does not match")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	s.SetHTTPChallengeAddr(closed)
	wantError(t, do(t, s, "PUT", s.Token(), confirm), 400, "connection refused", closed)

	redirect := httptest.NewServer(http.RedirectHandler("https://a.test/elsewhere", http.StatusMovedPermanently))
	defer redirect.Close()
	s.SetHTTPChallengeAddr(redirect.Listener.Addr().String())
	wantError(t, do(t, s, "PUT", s.Token(), confirm), 400, "got HTTP 301", "not followed")

	// Still pending after every failure: fix and confirm again.
	if n := len(s.PendingOrders(s.Token())); n != 1 {
		t.Fatalf("%d pending orders, want 1", n)
	}
	s.SetHTTPChallengeAddr(ch.addr())
	ch.set("a.test", v["file_path"], "  "+v["content"]+"\r\n")
	wantOK(t, do(t, s, "PUT", s.Token(), confirm))
}

// The check sends Host: <domain>, whatever address it dials.
func TestHTTPCheckHost(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr()})
	r := do(t, s, "POST", s.Token(), map[string]any{"domain": "a.test", "method": "http"})
	v := verification(t, r)
	ch.set("b.test", v["file_path"], v["content"])
	wantError(t, do(t, s, "PUT", s.Token(), map[string]any{"domain": "a.test"}), 400, "got HTTP 404")
}

// The net.Resolver path: with DNSServer set, queries go there and only
// there. Nothing listens, so the lookup fails, naming the record.
func TestDNSServerUnreachable(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	s := newServer(t, sslcitest.Options{DNSServer: addr})
	wantOK(t, do(t, s, "POST", s.Token(), map[string]any{"domain": "a.test", "method": "dns"}))
	wantError(t, do(t, s, "PUT", s.Token(), map[string]any{"domain": "a.test", "method": "dns"}), 400, "_acme-challenge.a.test.")
}
