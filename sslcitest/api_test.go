package sslcitest_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sslci/caddy-sslci/sslcitest"
)

func TestAuthentication(t *testing.T) {
	s := newServer(t, sslcitest.Options{})
	tok := s.Token()
	get := func(target string, header string) reply {
		req, _ := http.NewRequest("GET", target, nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		return send(t, s.HTTPClient(), req)
	}

	t.Run("bearer", func(t *testing.T) { wantOK(t, get(s.URL(), "Bearer "+tok)) })
	t.Run("query on GET", func(t *testing.T) { wantOK(t, get(s.URL()+"?token="+url.QueryEscape(tok), "")) })
	t.Run("body", func(t *testing.T) {
		wantOK(t, do(t, s, "GET", "", map[string]any{"token": tok}))
		wantOK(t, do(t, s, "POST", "", map[string]any{"token": tok, "domain": "a.test", "method": "http"}))
	})
	t.Run("missing", func(t *testing.T) { wantError(t, get(s.URL(), ""), 401, "missing token") })
	t.Run("unknown", func(t *testing.T) { wantError(t, get(s.URL(), "Bearer nope"), 401, "invalid token") })
	t.Run("not bearer", func(t *testing.T) { wantError(t, get(s.URL(), "Basic "+tok), 401, "Bearer") })
	t.Run("tokens differ", func(t *testing.T) {
		wantError(t, do(t, s, "GET", tok, map[string]any{"token": "other"}), 401, "differ")
	})
	t.Run("query refused on POST", func(t *testing.T) {
		req, _ := http.NewRequest("POST", s.URL()+"?token="+url.QueryEscape(tok),
			strings.NewReader(`{"domain":"a.test","method":"http"}`))
		wantError(t, send(t, s.HTTPClient(), req), 401, "only for GET")
		if n := len(s.PendingOrders(tok)); n != 1 {
			t.Errorf("%d pending orders, want 1 (from the body-token POST only)", n)
		}
	})
}

func TestRoutingErrors(t *testing.T) {
	s := newServer(t, sslcitest.Options{})
	for _, path := range []string{"/", "/api/", "/api/x", "/v1/api"} {
		req, _ := http.NewRequest("GET", strings.TrimSuffix(s.URL(), "/api")+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.Token())
		wantError(t, send(t, s.HTTPClient(), req), 404, "/api")
	}
	for _, m := range []string{"PATCH", "OPTIONS", "HEAD"} {
		req, _ := http.NewRequest(m, s.URL(), nil)
		req.Header.Set("Authorization", "Bearer "+s.Token())
		r := send(t, s.HTTPClient(), req)
		if r.status != 405 || r.header.Get("Allow") == "" {
			t.Errorf("%s: got %d (Allow %q), want 405 with Allow", m, r.status, r.header.Get("Allow"))
		}
	}
	if got := s.CountRequests(sslcitest.OpUnknown); got != 7 {
		t.Errorf("logged %d unknown requests, want 7", got)
	}
}

func TestBadRequests(t *testing.T) {
	s := newServer(t, sslcitest.Options{})
	tok := s.Token()
	huge := strings.Repeat("x", 1<<20+1)
	for _, tc := range []struct {
		name, method string
		body         any
		want         string
	}{
		{"no domain", "POST", map[string]any{"method": "http"}, "missing parameter domain"},
		{"domains on request", "POST", map[string]any{"domains": []string{"a.test"}, "method": "http"}, "finalize"},
		{"empty domain", "POST", map[string]any{"domain": "", "method": "http"}, "empty"},
		{"comma list", "POST", map[string]any{"domain": "a.test,b.test", "method": "http"}, "exactly one"},
		{"space list", "POST", map[string]any{"domain": "a.test b.test", "method": "http"}, "exactly one"},
		{"array", "POST", map[string]any{"domain": []string{"a.test"}, "method": "http"}, "exactly one"},
		{"number", "POST", map[string]any{"domain": 7, "method": "http"}, "must be a string"},
		{"ipv4", "POST", map[string]any{"domain": "127.0.0.1", "method": "http"}, "IP address"},
		{"ipv6", "POST", map[string]any{"domain": "::1", "method": "http"}, "IP address"},
		{"bad name", "POST", map[string]any{"domain": "-a.test", "method": "http"}, "not a valid"},
		{"underscore", "POST", map[string]any{"domain": "a_b.test", "method": "http"}, "not a valid"},
		{"one label", "POST", map[string]any{"domain": "localhost", "method": "http"}, "two labels"},
		{"no method", "POST", map[string]any{"domain": "a.test"}, "missing parameter method"},
		{"bad method", "POST", map[string]any{"domain": "a.test", "method": "ftp"}, "invalid parameter method"},
		{"wildcard http", "POST", map[string]any{"domain": "*.a.test", "method": "http"}, "only be verified with dns"},
		{"bad action", "POST", map[string]any{"action": "renew"}, "invalid parameter action"},
		{"invalid json", "POST", "{", "invalid JSON"},
		{"json array", "POST", "[1]", "must be an object"},
		{"huge body", "POST", map[string]any{"domain": huge}, "larger than"},
		{"finalize no domains", "POST", map[string]any{"action": "finalize"}, "missing parameter domains"},
		{"finalize empty", "POST", map[string]any{"action": "finalize", "domains": []string{}}, "empty"},
		{"finalize string", "POST", map[string]any{"action": "finalize", "domains": "a.test"}, "array"},
		{"finalize bad name", "POST", map[string]any{"action": "finalize", "domains": []string{"a..test"}}, "invalid parameter domains"},
		{"finalize unverified", "POST", map[string]any{"action": "finalize", "domains": []string{"a.test"}}, "domain a.test is not verified"},
		{"confirm no domain", "PUT", map[string]any{}, "missing parameter domain"},
		{"confirm no order", "PUT", map[string]any{"domain": "a.test"}, "no pending http verification"},
		{"confirm unknown id", "PUT", map[string]any{"domain": "a.test", "order_id": 99999}, "no such order"},
		{"confirm bad id", "PUT", map[string]any{"domain": "a.test", "order_id": "x"}, "invalid parameter order_id"},
		{"confirm bad method", "PUT", map[string]any{"domain": "a.test", "method": "ftp"}, "invalid parameter method"},
		{"delete no type", "DELETE", map[string]any{"id": 1}, "missing parameter type"},
		{"delete bad type", "DELETE", map[string]any{"type": "cert", "id": 1}, "invalid parameter type"},
		{"delete no id", "DELETE", map[string]any{"type": "ssl"}, "missing parameter id"},
		{"delete bad id", "DELETE", map[string]any{"type": "ssl", "id": 1.5}, "invalid parameter id"},
		{"delete unknown cert", "DELETE", map[string]any{"type": "ssl", "id": 424242}, "no such certificate"},
		{"delete unknown order", "DELETE", map[string]any{"type": "order", "id": 424242}, "no such order"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r reply
			if raw, ok := tc.body.(string); ok {
				req, _ := http.NewRequest(tc.method, s.URL(), strings.NewReader(raw))
				req.Header.Set("Authorization", "Bearer "+tok)
				r = send(t, s.HTTPClient(), req)
			} else {
				r = do(t, s, tc.method, tok, tc.body)
			}
			wantError(t, r, 400, tc.want)
		})
	}
	if n := len(s.PendingOrders(tok)); n != 0 {
		t.Errorf("bad requests left %d pending orders", n)
	}
}

func TestRequestResponse(t *testing.T) {
	s := newServer(t, sslcitest.Options{})
	r := do(t, s, "POST", s.Token(), map[string]any{"domain": "WWW.Example.COM", "method": "http"})
	wantOK(t, r)
	if r.str("domain") != "www.example.com" {
		t.Errorf("domain %q, want it lowercased", r.str("domain"))
	}
	v := verification(t, r)
	tok := v["token"]
	if len(tok) != 43 || strings.ContainsAny(tok, "+/=") {
		t.Errorf("token %q is not 32 bytes of base64url", tok)
	}
	want := map[string]string{
		"method":    "http",
		"token":     tok,
		"content":   tok + "." + s.Thumbprint(),
		"file_path": "/.well-known/acme-challenge/" + tok,
		"url":       "http://www.example.com/.well-known/acme-challenge/" + tok,
	}
	if len(v) != len(want) {
		t.Errorf("verification has %d fields, want %d: %v", len(v), len(want), v)
	}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("verification %s = %q, want %q", k, v[k], w)
		}
	}
	orders := s.PendingOrders(s.Token())
	if len(orders) != 1 || orders[0].ID != orderID(t, r) || orders[0].Token != tok || orders[0].Status != "pending" {
		t.Errorf("pending orders %+v", orders)
	}
}

func TestListAndDelete(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr()})
	tok := s.Token()

	r := do(t, s, "GET", tok, nil)
	wantOK(t, r)
	if string(r.raw) != `{"status":true,"certificates":[],"pending_orders":[]}`+"\n" {
		t.Errorf("empty list: %s", r.raw)
	}

	id := orderID(t, do(t, s, "POST", tok, map[string]any{"domain": "a.test", "method": "http"}))
	verifyHTTP(t, s, tok, "b.test", ch)
	verifyHTTP(t, s, tok, "c.test", ch)
	wantOK(t, do(t, s, "POST", tok, map[string]any{"action": "finalize", "domains": []string{"b.test", "c.test"}}))

	r = do(t, s, "GET", tok, nil)
	wantOK(t, r)
	certs := r.body["certificates"].([]any)
	orders := r.body["pending_orders"].([]any)
	if len(certs) != 1 || len(orders) != 1 {
		t.Fatalf("list: %s", r.raw)
	}
	c := certs[0].(map[string]any)
	if c["domains"] != "b.test,c.test" || c["crt_id"] != 1.0 || c["end_time"].(float64)-c["add_time"].(float64) < 89*86400 {
		t.Errorf("certificate %v", c)
	}
	o := orders[0].(map[string]any)
	if o["order_id"] != float64(id) || o["domains"] != "a.test" || o["status"] != "pending" {
		t.Errorf("order %v", o)
	}

	wantOK(t, do(t, s, "DELETE", tok, map[string]any{"type": "order", "id": id}))
	wantError(t, do(t, s, "DELETE", tok, map[string]any{"type": "order", "id": id}), 400, "no such order")
	// ids are accepted as numeric strings too
	wantOK(t, do(t, s, "DELETE", tok, map[string]any{"type": "ssl", "id": "1"}))
	wantError(t, do(t, s, "DELETE", tok, map[string]any{"type": "ssl", "id": 1}), 400, "no such certificate")
	if len(s.PendingOrders(tok)) != 0 || len(s.Certificates(tok)) != 0 {
		t.Errorf("records left after delete")
	}
	// an order id is not a certificate id
	id = orderID(t, do(t, s, "POST", tok, map[string]any{"domain": "a.test", "method": "http"}))
	wantError(t, do(t, s, "DELETE", tok, map[string]any{"type": "ssl", "id": id}), 400, "no such certificate")
	// a verification survives the deletion of its order
	wantOK(t, do(t, s, "POST", tok, map[string]any{"action": "finalize", "domains": []string{"b.test"}}))
}

func TestTwoAccounts(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{Tokens: []string{"alice-token", "bob-token"}, HTTPChallengeAddr: ch.addr()})
	if got := s.Tokens(); len(got) != 2 || s.Token() != "alice-token" {
		t.Fatalf("tokens %v", got)
	}
	verifyHTTP(t, s, "alice-token", "a.test", ch)
	wantOK(t, do(t, s, "POST", "alice-token", map[string]any{"action": "finalize", "domains": []string{"a.test"}}))
	order := orderID(t, do(t, s, "POST", "alice-token", map[string]any{"domain": "b.test", "method": "http"}))
	crt := s.Certificates("alice-token")[0].ID

	wantError(t, do(t, s, "DELETE", "bob-token", map[string]any{"type": "ssl", "id": crt}), 403)
	wantError(t, do(t, s, "DELETE", "bob-token", map[string]any{"type": "order", "id": order}), 403)
	wantError(t, do(t, s, "PUT", "bob-token", map[string]any{"domain": "b.test", "order_id": order}), 403)
	// Alice's verification is hers only.
	wantError(t, do(t, s, "POST", "bob-token", map[string]any{"action": "finalize", "domains": []string{"a.test"}}), 400, "not verified")

	r := do(t, s, "GET", "bob-token", nil)
	if string(r.raw) != `{"status":true,"certificates":[],"pending_orders":[]}`+"\n" {
		t.Errorf("bob sees %s", r.raw)
	}
	if len(s.Certificates("alice-token")) != 1 || len(s.PendingOrders("alice-token")) != 1 {
		t.Errorf("alice's records changed")
	}
}
