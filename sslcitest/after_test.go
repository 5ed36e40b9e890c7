package sslcitest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// rawDo sends one request on a new connection (net/http silently resends
// a GET that fails on a reused one), returning the transport or body error.
func rawDo(s *sslcitest.Server, method string, body any) (*http.Response, []byte, error) {
	return rawDoWith(&http.Client{}, s, method, body)
}

// rawDoWith is rawDo with c's redirect policy and timeout; its transport
// is replaced.
func rawDoWith(c *http.Client, s *sslcitest.Server, method string, body any) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.URL(), rd)
	req.Header.Set("Authorization", "Bearer "+s.Token())
	tr := s.HTTPClient().Transport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	client := *c
	client.Transport = tr
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp, raw, err
}

// TestAfterProcessingFaults loses or cuts the answer of every operation
// and checks the operation took effect all the same.
func TestAfterProcessingFaults(t *testing.T) {
	type op struct {
		op     sslcitest.Op
		method string
		body   func() any
		check  func(t *testing.T) // the effect is there
	}
	for _, kind := range []sslcitest.Fault{sslcitest.FaultLostAfter, sslcitest.FaultCutAfter} {
		t.Run(string(kind), func(t *testing.T) {
			ch := newChallengeServer(t)
			s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr()})
			tok := s.Token()
			verifyHTTP(t, s, tok, "v.test", ch)
			finalize(t, s, tok, []string{"v.test"}, nil) // certificate 1
			var order int64
			for _, o := range []op{
				{sslcitest.OpList, "GET", func() any { return nil }, func(t *testing.T) {}},
				{sslcitest.OpRequest, "POST", func() any { return map[string]any{"domain": "a.test", "method": "http"} }, func(t *testing.T) {
					p := s.PendingOrders(tok)
					if len(p) != 1 || p[0].Domain != "a.test" {
						t.Fatalf("pending orders %+v", p)
					}
					order = p[0].ID
					ch.set("a.test", "/.well-known/acme-challenge/"+p[0].Token, p[0].Token+"."+s.Thumbprint())
				}},
				{sslcitest.OpConfirm, "PUT", func() any { return map[string]any{"domain": "a.test", "order_id": order} }, func(t *testing.T) {
					if p := s.PendingOrders(tok); len(p) != 0 {
						t.Errorf("order still pending: %+v", p)
					}
				}},
				{sslcitest.OpFinalize, "POST", func() any { return map[string]any{"action": "finalize", "domains": []string{"a.test"}} }, func(t *testing.T) {
					c := s.Certificates(tok)
					if len(c) != 2 || !slices.Equal(c[1].Domains, []string{"a.test"}) {
						t.Errorf("certificates %+v", c)
					}
				}},
				{sslcitest.OpDelete, "DELETE", func() any { return map[string]any{"type": "ssl", "id": 1} }, func(t *testing.T) {
					if c := s.Certificates(tok); len(c) != 1 || c[0].ID != 1+1 {
						t.Errorf("certificates %+v", c)
					}
				}},
			} {
				s.InjectFault(o.op, kind, 1)
				resp, raw, err := rawDo(s, o.method, o.body())
				switch kind {
				case sslcitest.FaultLostAfter:
					if err == nil {
						t.Errorf("%s: got %d %s, want no answer", o.op, resp.StatusCode, raw)
					}
				case sslcitest.FaultCutAfter:
					if err == nil || resp == nil || resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) ||
						!strings.HasPrefix(string(raw), `{"`) || json.Valid(raw) {
						t.Errorf("%s: want 200 and half a JSON body, got %v %q", o.op, err, raw)
					}
				}
				e := lastRequest(t, s)
				if wantStatus := map[sslcitest.Fault]int{sslcitest.FaultLostAfter: 0, sslcitest.FaultCutAfter: 200}[kind]; e.Op != o.op || e.Fault != kind || e.Status != wantStatus {
					t.Errorf("%s: logged %+v", o.op, e)
				}
				o.check(t)
			}
			// one shot each
			wantOK(t, do(t, s, "GET", tok, nil))
		})
	}
}

// TestLostAnswersSeenInList is what a client does after losing an answer:
// it lists, and finds what the request did.
func TestLostAnswersSeenInList(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr()})
	c, err := api.New(s.URL(), s.Token())
	if err != nil {
		t.Fatal(err)
	}
	c.HTTPClient = s.HTTPClient()
	c.Retry = api.RetryPolicy{MaxAttempts: 1} // a list is retried by the caller, below
	ctx := context.Background()
	list := func() *api.List {
		t.Helper()
		l, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	// A lost verification request: the order exists.
	s.InjectFault(sslcitest.OpRequest, sslcitest.FaultLostAfter, 1)
	if _, err := c.RequestVerification(ctx, "a.test", api.MethodHTTP); err == nil {
		t.Fatal("lost verification request succeeded")
	}
	l := list()
	if len(l.PendingOrders) != 1 || !slices.Equal(l.PendingOrders[0].Domains, []string{"a.test"}) || l.PendingOrders[0].Status != "pending" {
		t.Fatalf("pending orders %+v", l.PendingOrders)
	}

	// A lost finalize: the certificate exists.
	verifyHTTP(t, s, s.Token(), "b.test", ch)
	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultLostAfter, 1)
	if _, err := c.Finalize(ctx, []string{"b.test"}, nil); err == nil {
		t.Fatal("lost finalize succeeded")
	}
	l = list()
	if len(l.Certificates) != 1 || !slices.Equal(l.Certificates[0].Domains, []string{"b.test"}) {
		t.Fatalf("certificates %+v", l.Certificates)
	}

	// A lost delete: the record is gone.
	s.InjectFault(sslcitest.OpDelete, sslcitest.FaultLostAfter, 1)
	if err := c.Delete(ctx, api.RecordCertificate, l.Certificates[0].ID); err == nil {
		t.Fatal("lost delete succeeded")
	}
	if l = list(); len(l.Certificates) != 0 {
		t.Fatalf("certificates %+v", l.Certificates)
	}
	if n := s.CountRequests(sslcitest.OpDelete); n != 1 {
		t.Errorf("%d deletes sent", n)
	}
}

// TestAfterFaultsWaitForSuccess: a queued after-processing fault passes
// over error answers.
func TestAfterFaultsWaitForSuccess(t *testing.T) {
	ch := newChallengeServer(t)
	s := newServer(t, sslcitest.Options{HTTPChallengeAddr: ch.addr()})
	body := map[string]any{"action": "finalize", "domains": []string{"a.test"}}
	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultLostAfter, 1)
	wantError(t, do(t, s, "POST", s.Token(), body), 400, "not verified")
	verifyHTTP(t, s, s.Token(), "a.test", ch)
	if _, _, err := rawDo(s, "POST", body); err == nil {
		t.Fatal("the queued fault was lost on an error answer")
	}
	// Along with a certificate fault: both apply, the log shows the last.
	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultExpired, 1)
	s.InjectFault(sslcitest.OpFinalize, sslcitest.FaultCutAfter, 1)
	if _, _, err := rawDo(s, "POST", body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v", err)
	}
	if e := lastRequest(t, s); e.Fault != sslcitest.FaultCutAfter {
		t.Errorf("logged %+v", e)
	}
	if c := s.Certificates(s.Token()); len(c) != 2 || !c[1].EndTime.Before(c[1].AddTime) {
		t.Errorf("certificates %+v", c)
	}
}

func TestRandomAfterFaults(t *testing.T) {
	// Every request rolls LostAfter: each is processed, none is answered.
	s := newServer(t, sslcitest.Options{Faults: sslcitest.FaultRates{LostAfter: 1}})
	for range 3 {
		if _, _, err := rawDo(s, "POST", map[string]any{"domain": "a.test", "method": "http"}); err == nil {
			t.Fatal("answered")
		}
	}
	if n := len(s.PendingOrders(s.Token())); n != 3 {
		t.Errorf("%d orders", n)
	}
	// An error answer is not lost: the dice struck a request that failed.
	if resp, _, err := rawDo(s, "POST", map[string]any{"domain": "a.test"}); err != nil || resp.StatusCode != 400 {
		t.Errorf("got %v %v", resp, err)
	}

	s = newServer(t, sslcitest.Options{Faults: sslcitest.FaultRates{CutAfter: 0.5}, Seed: 3})
	var cut, whole int
	for range 40 {
		switch _, _, err := rawDo(s, "GET", nil); {
		case err == nil:
			whole++
		case errors.Is(err, io.ErrUnexpectedEOF):
			cut++
		default:
			t.Fatal(err)
		}
	}
	if cut == 0 || whole == 0 {
		t.Errorf("%d cut, %d whole", cut, whole)
	}
}
