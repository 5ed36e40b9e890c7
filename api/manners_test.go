package api_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

const listBody = `{"status":true,"certificates":[{"crt_id":1,"domains":"a.example.test","add_time":1715000000,"end_time":1722776000}],"pending_orders":[]}`

// A thousand names at once: the client keeps at most MaxConcurrent
// requests in flight and as many connections, whoever calls it.
func TestConcurrencyBound(t *testing.T) {
	var conns, inFlight, peak atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(2 * time.Millisecond)
		w.Write([]byte(listBody))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c, err := api.New(srv.URL+"/api", testToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConcurrent != api.DefaultMaxConcurrent || c.HTTPClient.Timeout != api.DefaultTimeout {
		t.Fatalf("New set MaxConcurrent %d, timeout %s", c.MaxConcurrent, c.HTTPClient.Timeout)
	}
	const callers = 500
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range callers {
		wg.Go(func() {
			if _, err := c.List(context.Background()); err != nil {
				failed.Add(1)
				t.Error(err)
			}
		})
	}
	wg.Wait()
	bound := int32(api.DefaultMaxConcurrent)
	t.Logf("%d calls: %d connections, peak %d in flight", callers, conns.Load(), peak.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed", failed.Load())
	}
	if conns.Load() > bound || peak.Load() > bound {
		t.Errorf("%d connections, %d requests in flight at most; want at most %d", conns.Load(), peak.Load(), bound)
	}
	if peak.Load() < 2 {
		t.Errorf("peak of %d in flight: the calls were serialized", peak.Load())
	}
}

// Waiting for a slot ends with the context, and sends nothing.
func TestSlotWaitHonoursContext(t *testing.T) {
	var hits atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		<-release
		w.Write([]byte(listBody))
	}))
	defer srv.Close()
	defer close(release)
	c, _ := api.New(srv.URL+"/api", testToken)
	c.MaxConcurrent = 1
	go c.List(context.Background())
	for hits.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.List(ctx)
	var apiErr *api.Error
	if !errors.Is(err, api.ErrTimeout) || !errors.As(err, &apiErr) || apiErr.Attempts != 0 || !strings.Contains(err.Error(), "slot") {
		t.Fatalf("err = %v, want a timeout waiting for a slot", err)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("the server saw %d requests, want 1", n)
	}
}

// One 429 with Retry-After slows the whole client: no other request
// reaches the server before the time it named, first attempts included.
func TestRetryAfterSlowsTheWholeClient(t *testing.T) {
	var mu sync.Mutex
	var limitedAt time.Time // when the server sent its 429
	var arrivals []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if limitedAt.IsZero() {
			limitedAt = time.Now()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"status":false,"message":"slow down"}`))
			return
		}
		arrivals = append(arrivals, time.Now())
		w.Write([]byte(listBody))
	}))
	defer srv.Close()
	c, _ := api.New(srv.URL+"/api", testToken)
	c.Retry = fastRetries
	limited := make(chan struct{})
	var once sync.Once
	c.Observe = func(_ api.Op, status int, _ time.Duration, _ error) {
		if status == http.StatusTooManyRequests {
			once.Do(func() { close(limited) })
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := c.List(context.Background()); err != nil {
			t.Errorf("the rate-limited call, retried: %v", err)
		}
	})
	<-limited

	// A caller whose deadline comes first is told at once, sending nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := c.List(ctx)
	cancel()
	var apiErr *api.Error
	if !errors.Is(err, api.ErrRateLimited) || !errors.As(err, &apiErr) || apiErr.RetryAfter <= 0 || apiErr.StatusCode != 0 {
		t.Errorf("err = %v, want rate limited before sending, with the time left", err)
	}

	const others = 20
	for range others {
		wg.Go(func() {
			if _, err := c.List(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(arrivals) != others+1 {
		t.Errorf("the server saw %d requests after the 429, want %d", len(arrivals), others+1)
	}
	for _, at := range arrivals {
		if early := at.Sub(limitedAt); early < time.Second {
			t.Errorf("a request arrived %s after the 429 that said Retry-After: 1", early)
		}
	}
}

// The server's Retry-After is on the error, pending confirmations included,
// so that a caller polling a confirmation can follow it.
func TestRetryAfterOnErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"status":"pending","message":"checking"}`))
	}))
	defer srv.Close()
	c, _ := api.New(srv.URL+"/api", testToken)
	_, err := c.ConfirmVerification(context.Background(), api.ConfirmRequest{Domain: "a.example.test"})
	var apiErr *api.Error
	if !errors.Is(err, api.ErrPending) || !errors.As(err, &apiErr) || apiErr.RetryAfter != 7*time.Second || apiErr.Attempts != 1 {
		t.Fatalf("err = %v (%+v), want pending with RetryAfter 7s", err, apiErr)
	}
	// A pending answer does not slow the client down.
	start := time.Now()
	if _, err := c.ConfirmVerification(context.Background(), api.ConfirmRequest{Domain: "a.example.test"}); !errors.Is(err, api.ErrPending) {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("the second confirmation waited %s", waited)
	}
}

// Observe is called once per attempt, with the status (0 when nothing came
// back) and the error, never with the token.
func TestObserve(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "boom "+testToken, http.StatusInternalServerError)
			return
		}
		w.Write([]byte(listBody))
	}))
	type seen struct {
		op     api.Op
		status int
		d      time.Duration
		err    error
	}
	var mu sync.Mutex
	var got []seen
	c, _ := api.New(srv.URL+"/api", testToken)
	c.Retry = fastRetries
	c.Observe = func(op api.Op, status int, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, seen{op, status, d, err})
	}
	if _, err := c.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].op != api.OpList || got[0].status != 500 || !errors.Is(got[0].err, api.ErrServer) ||
		got[1].status != 200 || got[1].err != nil || got[0].d <= 0 || got[1].d <= 0 {
		t.Fatalf("observed %+v, want a 500 then a 200", got)
	}
	if strings.Contains(got[0].err.Error(), testToken) {
		t.Errorf("observed error carries the token: %v", got[0].err)
	}

	srv.Close()
	got = nil
	if err := c.Delete(context.Background(), api.RecordOrder, 1); !errors.Is(err, api.ErrTransport) {
		t.Fatalf("err = %v, want a transport error", err)
	}
	if len(got) != fastRetries.MaxAttempts || got[0].op != api.OpDelete || got[0].status != 0 || !errors.Is(got[0].err, api.ErrTransport) {
		t.Errorf("observed %+v, want %d transport errors with status 0", got, fastRetries.MaxAttempts)
	}
}

// SetRootCAs lets the client trust a private endpoint's TLS certificate.
func TestSetRootCAs(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(listBody)) }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	c, _ := api.New(srv.URL+"/api", testToken)
	c.Retry.MaxAttempts = 1
	if _, err := c.List(context.Background()); !errors.Is(err, api.ErrTransport) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want an unknown authority", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c, _ = api.New(srv.URL+"/api", testToken)
	if err := c.SetRootCAs(roots); err != nil {
		t.Fatal(err)
	}
	if l, err := c.List(context.Background()); err != nil || len(l.Certificates) != 1 {
		t.Fatalf("List = %+v, %v", l, err)
	}
	c.HTTPClient = &http.Client{}
	if err := c.SetRootCAs(roots); err == nil {
		t.Error("SetRootCAs accepted a transport not the client's own")
	}
}

// SetRootCAsFunc's roots are asked for once, by the first request to an
// https endpoint, which waits for them; a plain-http endpoint never asks.
func TestSetRootCAsFunc(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(listBody)) }))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	release := make(chan struct{})
	var calls atomic.Int32
	c, _ := api.New(srv.URL+"/api", testToken)
	if err := c.SetRootCAsFunc(func() *x509.CertPool { calls.Add(1); <-release; return roots }); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 3)
	for range 3 {
		go func() { _, err := c.List(context.Background()); done <- err }()
	}
	select {
	case err := <-done:
		t.Fatalf("a request ended before the roots were loaded: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	for range 3 {
		if err := <-done; err != nil {
			t.Errorf("List with the roots loaded: %v", err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the roots were asked for %d times, want once", n)
	}

	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(listBody)) }))
	defer plain.Close()
	c, _ = api.New(plain.URL+"/api", testToken)
	c.SetRootCAsFunc(func() *x509.CertPool { t.Error("roots asked for by a plain-http endpoint"); return nil })
	if _, err := c.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.HTTPClient = &http.Client{}
	if err := c.SetRootCAsFunc(func() *x509.CertPool { return roots }); err == nil {
		t.Error("SetRootCAsFunc accepted a transport not the client's own")
	}
}

// The client's path on loopback: go test -bench . ./api
func BenchmarkList(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(listBody)) }))
	defer srv.Close()
	c, _ := api.New(srv.URL+"/api", testToken)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.List(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRequestVerificationParallel(b *testing.B) {
	body := `{"status":true,"domain":"a.example.test","order_id":42,"verification":{"method":"http","token":"tok","content":"tok.th","file_path":"/.well-known/acme-challenge/tok"}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) }))
	defer srv.Close()
	c, _ := api.New(srv.URL+"/api", testToken)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.RequestVerification(context.Background(), "a.example.test", api.MethodHTTP); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The simulator's TLS mode, trusted through SetRootCAs alone: the whole
// documented flow over https with the client's own transport.
func TestSimulatorOverTLSWithRootCAs(t *testing.T) {
	cs := startChallengeServer(t)
	sim, err := sslcitest.NewServer(sslcitest.Options{TLS: true, HTTPChallengeAddr: cs.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	c, err := api.New(sim.URL(), sim.Token())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetRootCAs(sim.RootPool()); err != nil {
		t.Fatal(err)
	}
	verify(t, c, cs, "tls.example.test")
	cert, err := c.Finalize(context.Background(), []string{"tls.example.test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkChain(t, sim, cert, []string{"tls.example.test"})
}
