package sslcitest_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

func TestTLS(t *testing.T) {
	s := newServer(t, sslcitest.Options{TLS: true, TLSHosts: []string{"sslci.test"}})
	if !strings.HasPrefix(s.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL %s", s.URL())
	}
	wantOK(t, do(t, s, "GET", s.Token(), nil))

	req, _ := http.NewRequest("GET", s.URL(), nil)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Error("a client without the root trusted the server")
	}
	// The serving certificate names the extra host too.
	port := strings.TrimPrefix(strings.TrimSuffix(s.URL(), "/api"), "https://127.0.0.1:")
	conn, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{RootCAs: s.RootPool(), ServerName: "sslci.test"})
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p == "h2" {
		t.Error("HTTP/2 negotiated")
	}
	conn.Close()

	// Faults that break the connection work over TLS too.
	s.InjectFault(sslcitest.OpList, sslcitest.FaultTruncated, 1)
	if _, _, err := rawGet(s); err == nil {
		t.Error("truncated response read without error")
	}
}

func TestRootPEM(t *testing.T) {
	s := newServer(t, sslcitest.Options{})
	if !strings.HasPrefix(string(s.RootPEM()), "-----BEGIN CERTIFICATE-----") || !s.Root().IsCA {
		t.Error("root")
	}
	if s.Root().Subject.CommonName == newServer(t, sslcitest.Options{}).Root().Subject.CommonName {
		t.Error("two simulators have roots of the same name")
	}
}

func TestRequestLog(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	s := newServer(t, sslcitest.Options{Logf: func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(format, args...))
	}})
	tok := s.Token()
	before := time.Now()
	wantOK(t, do(t, s, "POST", tok, map[string]any{"domain": "a.test", "method": "http"}))
	wantError(t, do(t, s, "POST", tok, map[string]any{"action": "finalize", "domains": []string{"a.test", "b.test"}}), 400)
	req, _ := http.NewRequest("GET", s.URL()+"?token="+url.QueryEscape(tok), nil)
	wantOK(t, send(t, s.HTTPClient(), req))
	wantError(t, do(t, s, "PUT", "", map[string]any{"token": "wrong"}), 401)
	wantError(t, do(t, s, "PATCH", tok, nil), 405)
	wantError(t, do(t, s, "DELETE", tok, map[string]any{"type": "ssl", "id": 1}), 400)

	log := s.Requests()
	want := []struct {
		op     sslcitest.Op
		status int
	}{{sslcitest.OpRequest, 200}, {sslcitest.OpFinalize, 400}, {sslcitest.OpList, 200},
		{sslcitest.OpConfirm, 401}, {sslcitest.OpUnknown, 405}, {sslcitest.OpDelete, 400}}
	if len(log) != len(want) {
		t.Fatalf("log %+v", log)
	}
	for i, w := range want {
		if log[i].Op != w.op || log[i].Status != w.status || log[i].Time.Before(before) {
			t.Errorf("entry %d: %+v, want %v %d", i, log[i], w.op, w.status)
		}
	}
	if !slices.Equal(log[1].Domains, []string{"a.test", "b.test"}) || log[0].Method != "POST" {
		t.Errorf("entries %+v %+v", log[0], log[1])
	}
	log[1].Domains[0] = "changed"
	if s.Requests()[1].Domains[0] != "a.test" {
		t.Error("Requests shares memory with the log")
	}
	if s.CountRequests(sslcitest.OpAny) != 6 || s.CountRequests(sslcitest.OpList) != 1 {
		t.Error("counts")
	}
	s.ResetRequests()
	if s.CountRequests(sslcitest.OpAny) != 0 {
		t.Error("not reset")
	}

	s.Close() // after Close no handler logs any more
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 6 {
		t.Errorf("%d log lines", len(lines))
	}
	for _, l := range lines {
		if strings.Contains(l, tok) {
			t.Errorf("token logged: %s", l)
		}
	}
}

func TestConcurrency(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{
		HTTPChallengeAddr: ch.addr(), Tokens: []string{"t1", "t2", "t3"},
		Faults: sslcitest.FaultRates{ServerError: 0.1, RateLimit: 0.1},
		Logf:   func(string, ...any) {},
	})
	// call retries through the random faults.
	call := func(tok, method string, body map[string]any) (reply, error) {
		for range 20 {
			r, err := tryDo(s, method, tok, body)
			if err != nil || r.status != 500 && r.status != 429 {
				return r, err
			}
		}
		return reply{}, errors.New("faults all the way")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 30 {
		wg.Go(func() {
			tok := s.Tokens()[i%3]
			domain := fmt.Sprintf("d%d.test", i)
			r, err := call(tok, "POST", map[string]any{"domain": domain, "method": "http"})
			v, _ := r.body["verification"].(map[string]any)
			if err != nil || r.status != 200 || v == nil {
				errs <- fmt.Errorf("request %s: %v %s", domain, err, r.raw)
				return
			}
			ch.set(domain, v["file_path"].(string), v["content"].(string))
			if r, err = call(tok, "PUT", map[string]any{"domain": domain}); err != nil || r.status != 200 {
				errs <- fmt.Errorf("confirm %s: %v %s", domain, err, r.raw)
				return
			}
			if r, err = call(tok, "POST", map[string]any{"action": "finalize", "domains": []string{domain}}); err != nil || r.status != 200 {
				errs <- fmt.Errorf("finalize %s: %v %s", domain, err, r.raw)
			}
			if r, err = call(tok, "GET", nil); err != nil || r.status != 200 {
				errs <- fmt.Errorf("list: %v %s", err, r.raw)
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			s.InjectFault(sslcitest.OpList, sslcitest.FaultServerError, 1)
			s.Advance(time.Second)
			s.Requests()
			s.PendingOrders("t1")
			s.SetSignCSR(true)
			s.SetHTTPChallengeAddr(ch.addr())
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := 0
	for _, tok := range s.Tokens() {
		total += len(s.Certificates(tok))
	}
	if total != 30 {
		t.Errorf("%d certificates, want 30", total)
	}
}

func TestOptionsValidated(t *testing.T) {
	for _, o := range []sslcitest.Options{
		{Tokens: []string{"a", "a"}},
		{Tokens: []string{""}},
		{Validity: -time.Hour},
		{Addr: "256.0.0.1:0"},
	} {
		if s, err := sslcitest.NewServer(o); err == nil {
			s.Close()
			t.Errorf("%+v accepted", o)
		}
	}
	s := newServer(t, sslcitest.Options{})
	if tok := s.Token(); len(tok) != 43 || len(s.Tokens()) != 1 {
		t.Errorf("default token %q", tok)
	}
}

func TestHandlerElsewhere(t *testing.T) {
	s := newServer(t, sslcitest.Options{})
	other := httptest.NewServer(s.Handler())
	defer other.Close()
	req, _ := http.NewRequest("GET", other.URL+"/api", nil)
	req.Header.Set("Authorization", "Bearer "+s.Token())
	wantOK(t, send(t, other.Client(), req))
	if s.CountRequests(sslcitest.OpList) != 1 {
		t.Error("not logged")
	}
}
