package sslcitest_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sslci/caddy-sslci/sslcitest"
)

func TestRedirect(t *testing.T) {
	var hits atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	defer elsewhere.Close()
	s := newServer(t, sslcitest.Options{})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	body := map[string]any{"domain": "a.test", "method": "http"}

	for _, status := range []int{301, 302, 307, 308} {
		s.InjectRedirect(sslcitest.OpRequest, status, elsewhere.URL+"/api", 1)
		resp, _, err := rawDoWith(noFollow, s, "POST", body)
		if err != nil || resp.StatusCode != status || resp.Header.Get("Location") != elsewhere.URL+"/api" ||
			resp.Header.Get("Content-Type") != "text/html" {
			t.Errorf("%d: got %v %v", status, resp, err)
		}
		if e := lastRequest(t, s); e.Fault != sslcitest.FaultRedirect || e.Status != status || e.Op != sslcitest.OpRequest {
			t.Errorf("logged %+v", e)
		}
	}
	if n := len(s.PendingOrders(s.Token())); n != 0 || hits.Load() != 0 {
		t.Errorf("redirected requests made %d orders, %d requests elsewhere", n, hits.Load())
	}
	wantOK(t, do(t, s, "POST", s.Token(), body)) // one shot each

	// A client that follows sends its request elsewhere (a 307 or 308 with
	// its body, and a token in the body with it).
	s.InjectRedirect(sslcitest.OpAny, 307, elsewhere.URL+"/stolen", 1)
	if r := do(t, s, "GET", s.Token(), nil); r.status != 200 || hits.Load() != 1 {
		t.Errorf("following: %d, %d requests elsewhere", r.status, hits.Load())
	}

	// Cancelled like the other faults.
	s.InjectRedirect(sslcitest.OpList, 302, elsewhere.URL, 3)
	s.InjectFault(sslcitest.OpList, sslcitest.FaultRedirect, 0)
	wantOK(t, do(t, s, "GET", s.Token(), nil))

	for _, bad := range []func(){
		func() { s.InjectRedirect(sslcitest.OpList, 200, elsewhere.URL, 1) },
		func() { s.InjectRedirect(sslcitest.OpList, 302, "", 1) },
		func() { s.InjectFault(sslcitest.OpList, sslcitest.FaultRedirect, 1) },
	} {
		func() {
			defer func() {
				if p := recover(); p == nil || !strings.HasPrefix(p.(string), "sslcitest: ") {
					t.Errorf("panic %v", p)
				}
			}()
			bad()
		}()
	}
}
