package sslcitest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// rawGet lists on a connection of its own (net/http silently retries a GET
// dropped on a reused connection), returning the transport or body error
// instead of failing.
func rawGet(s *sslcitest.Server) (*http.Response, []byte, error) {
	req, _ := http.NewRequest("GET", s.URL(), nil)
	req.Close = true
	req.Header.Set("Authorization", "Bearer "+s.Token())
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func lastRequest(t *testing.T, s *sslcitest.Server) sslcitest.Request {
	t.Helper()
	log := s.Requests()
	if len(log) == 0 {
		t.Fatal("empty request log")
	}
	return log[len(log)-1]
}

func TestTransportFaults(t *testing.T) {
	s := newServer(t, sslcitest.Options{Faults: sslcitest.FaultRates{RetryAfter: 2500 * time.Millisecond}})
	for _, tc := range []struct {
		fault  sslcitest.Fault
		status int
		check  func(t *testing.T, resp *http.Response, body []byte, err error)
	}{
		{sslcitest.FaultServerError, 500, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 500 || !strings.Contains(string(body), `"status":false`) {
				t.Errorf("%v %v %s", err, resp, body)
			}
		}},
		{sslcitest.FaultMalformedJSON, 200, func(t *testing.T, resp *http.Response, body []byte, err error) {
			var v any
			if err != nil || resp.StatusCode != 200 || json.Unmarshal(body, &v) == nil {
				t.Errorf("want 200 with broken JSON: %v %s", err, body)
			}
		}},
		{sslcitest.FaultHTML, 502, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 502 || resp.Header.Get("Content-Type") != "text/html" || !strings.HasPrefix(string(body), "<html>") {
				t.Errorf("%v %v %s", err, resp, body)
			}
		}},
		{sslcitest.FaultRateLimit, 429, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" {
				t.Errorf("%v %v", err, resp)
			}
		}},
		{sslcitest.FaultUnavailable, 503, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "3" {
				t.Errorf("%v %v", err, resp)
			}
		}},
		{sslcitest.FaultDrop, 0, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err == nil || resp != nil {
				t.Errorf("want a transport error, got %v", resp)
			}
		}},
		{sslcitest.FaultTruncated, 200, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) || resp == nil || resp.StatusCode != 200 {
				t.Errorf("want 200 and an unexpected EOF, got %v %v", resp, err)
			}
		}},
	} {
		t.Run(string(tc.fault), func(t *testing.T) {
			s.InjectFault(sslcitest.OpList, tc.fault, 1)
			resp, body, err := rawGet(s)
			tc.check(t, resp, body, err)
			if e := lastRequest(t, s); e.Fault != tc.fault || e.Status != tc.status || e.Op != sslcitest.OpList {
				t.Errorf("logged %+v", e)
			}
			// one shot
			if resp, _, err := rawGet(s); err != nil || resp.StatusCode != 200 {
				t.Errorf("after the fault: %v %v", resp, err)
			}
		})
	}
}

func TestFaultBeforeProcessing(t *testing.T) {
	s := newServer(t, sslcitest.Options{})
	s.InjectFault(sslcitest.OpRequest, sslcitest.FaultServerError, 2)
	req := map[string]any{"domain": "a.test", "method": "http"}
	wantOK(t, do(t, s, "GET", s.Token(), nil)) // OpRequest's faults wait
	wantError(t, do(t, s, "POST", s.Token(), req), 500)
	wantError(t, do(t, s, "POST", s.Token(), req), 500)
	s.InjectFault(sslcitest.OpAny, sslcitest.FaultDrop, 1)
	r, _ := http.NewRequest("POST", s.URL(), strings.NewReader(`{"domain":"a.test","method":"http"}`))
	r.Header.Set("Authorization", "Bearer "+s.Token())
	if _, err := s.HTTPClient().Do(r); err == nil {
		t.Error("the OpAny drop was not applied")
	}
	if n := len(s.PendingOrders(s.Token())); n != 0 {
		t.Errorf("faulted requests created %d orders", n)
	}
	wantOK(t, do(t, s, "POST", s.Token(), req))
	// even an unauthenticated request gets the fault first
	s.InjectFault(sslcitest.OpList, sslcitest.FaultUnavailable, 1)
	if r := do(t, s, "GET", "bad", nil); r.status != 503 {
		t.Errorf("got %d", r.status)
	}
}

func TestFaultPending(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr()})
	s.InjectFault(sslcitest.OpAny, sslcitest.FaultPending, 1) // waits for a confirm
	wantError(t, do(t, s, "PUT", s.Token(), map[string]any{"domain": "a.test"}), 400, "no pending")
	r := do(t, s, "POST", s.Token(), map[string]any{"domain": "a.test", "method": "http"})
	wantOK(t, r)
	v := verification(t, r)
	ch.set("a.test", v["file_path"], v["content"])
	r = do(t, s, "PUT", s.Token(), map[string]any{"domain": "a.test"})
	if r.status != 200 || r.body["status"] != "pending" || r.message() != "verification in progress" {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	if len(s.PendingOrders(s.Token())) != 1 {
		t.Fatal("order no longer pending")
	}
	wantOK(t, do(t, s, "PUT", s.Token(), map[string]any{"domain": "a.test"}))
}

func TestCertificateFaults(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr()})
	body := map[string]any{"action": "finalize", "domains": []string{"a.test"}}
	// A finalize refused before issuing leaves the fault queued.
	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultExpired, 1)
	wantError(t, do(t, s, "POST", s.Token(), body), 400, "not verified")
	if e := lastRequest(t, s); e.Fault != sslcitest.FaultNone {
		t.Errorf("logged %+v", e)
	}
	verifyHTTP(t, s, s.Token(), "a.test", ch)
	if f := finalize(t, s, s.Token(), []string{"a.test"}, nil); !f.leaf.NotAfter.Before(time.Now()) {
		t.Error("the queued fault was lost")
	}

	inter := func(r reply) *x509.CertPool {
		p := x509.NewCertPool()
		p.AppendCertsFromPEM([]byte(r.str("ca")))
		return p
	}

	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultWrongNames, 1)
	r := do(t, s, "POST", s.Token(), body)
	wantOK(t, r)
	leaf := parseCert(t, r.str("crt"))
	if !slices.Equal(leaf.DNSNames, []string{"wrong.invalid"}) {
		t.Errorf("names %v", leaf.DNSNames)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.RootPool(), Intermediates: inter(r)}); err != nil {
		t.Errorf("wrong-names certificate should chain: %v", err)
	}

	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultBrokenPEM, 1)
	r = do(t, s, "POST", s.Token(), body)
	wantOK(t, r)
	b, _ := pem.Decode([]byte(r.str("crt")))
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("crt is not a PEM block: %q", r.str("crt"))
	}
	if _, err := x509.ParseCertificate(b.Bytes); err == nil {
		t.Error("broken PEM parses")
	}

	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultWrongKey, 1)
	f := finalize(t, s, s.Token(), []string{"a.test"}, nil)
	if f.key.(*ecdsa.PublicKey).Equal(f.leaf.PublicKey) {
		t.Error("wrong-key certificate is for the returned key")
	}

	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultExpired, 1)
	f = finalize(t, s, s.Token(), []string{"a.test"}, nil)
	if !f.leaf.NotAfter.Before(time.Now()) {
		t.Errorf("NotAfter %v is not in the past", f.leaf.NotAfter)
	}

	// They are processed: five certificates recorded.
	if n := len(s.Certificates(s.Token())); n != 5 {
		t.Errorf("%d certificates recorded", n)
	}
	if e := lastRequest(t, s); e.Fault != sslcitest.FaultExpired || e.Status != 200 {
		t.Errorf("logged %+v", e)
	}
}

func TestRandomFaults(t *testing.T) {
	s := newServer(t, sslcitest.Options{Faults: sslcitest.FaultRates{ServerError: 1}})
	for range 3 {
		wantError(t, do(t, s, "GET", s.Token(), nil), 500)
	}

	rates := sslcitest.FaultRates{ServerError: 0.2, HTML: 0.2, RateLimit: 0.2}
	statuses := func(seed int64) []int {
		s := newServer(t, sslcitest.Options{Faults: rates, Seed: seed})
		var got []int
		for range 30 {
			got = append(got, do(t, s, "GET", s.Token(), nil).status)
		}
		return got
	}
	a, b := statuses(42), statuses(42)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different runs:\n%v\n%v", a, b)
	}
	if !slices.Contains(a, 200) || !slices.Contains(a, 500) || !slices.Contains(a, 502) || !slices.Contains(a, 429) {
		t.Errorf("statuses %v lack a kind", a)
	}
	if d := statuses(0); slices.Equal(d, statuses(0)) == false {
		t.Error("seed 0 does not repeat")
	}
}

func TestLatency(t *testing.T) {
	s := newServer(t, sslcitest.Options{Faults: sslcitest.FaultRates{Latency: 100 * time.Millisecond}})
	start := time.Now()
	wantOK(t, do(t, s, "GET", s.Token(), nil))
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("answered in %v", d)
	}

	// A client that gives up ends the wait.
	s = newServer(t, sslcitest.Options{Faults: sslcitest.FaultRates{Latency: time.Hour}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL(), nil)
	if _, err := s.HTTPClient().Do(req); err == nil {
		t.Fatal("no error")
	}
	s.Close() // returns although a handler was sleeping
}

func TestFaultOptionsValidated(t *testing.T) {
	for _, r := range []sslcitest.FaultRates{{Drop: 1.5}, {HTML: -0.1}, {ServerError: 0.6, Unavailable: 0.6},
		{LostAfter: 0.6, CutAfter: 0.5}, {Pending: 0.5, ServerError: 0.6}, {PendingRetryAfter: -time.Second}} {
		if _, err := sslcitest.NewServer(sslcitest.Options{Faults: r}); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	s := newServer(t, sslcitest.Options{})
	for _, kind := range []sslcitest.Fault{"typo", sslcitest.FaultNone} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("fault %q accepted", kind)
				}
			}()
			s.InjectFault(sslcitest.OpAny, kind, 1)
		}()
	}
}

func TestCancelInjectedFaults(t *testing.T) {
	s := newServer(t, sslcitest.Options{})
	s.InjectFault(sslcitest.OpList, sslcitest.FaultServerError, 5)
	s.InjectFault(sslcitest.OpList, sslcitest.FaultHTML, 5)
	s.InjectFault(sslcitest.OpRequest, sslcitest.FaultServerError, 5)

	s.InjectFault(sslcitest.OpList, sslcitest.FaultServerError, 0) // this kind for this op
	if r := do(t, s, "GET", s.Token(), nil); r.status != 502 {
		t.Errorf("got %d, want the HTML fault still queued", r.status)
	}
	s.InjectFault(sslcitest.OpAny, sslcitest.FaultNone, 0) // everything
	wantOK(t, do(t, s, "GET", s.Token(), nil))
	wantOK(t, do(t, s, "POST", s.Token(), map[string]any{"domain": "a.test", "method": "http"}))
}
