package sslcitest_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// manyClient is a client for many requests at once, keeping its
// connections for reuse.
func manyClient(s *sslcitest.Server) *http.Client {
	tr := s.HTTPClient().Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1000
	return &http.Client{Transport: tr}
}

func TestConnections(t *testing.T) {
	s := newServer(t, sslcitest.Options{})
	if n := s.Connections(); n != 0 {
		t.Fatalf("%d connections before any request", n)
	}
	for range 3 {
		if _, _, err := rawDo(s, "GET", nil); err != nil { // a connection each
			t.Fatal(err)
		}
	}
	c := manyClient(s)
	defer c.CloseIdleConnections()
	for range 5 { // one kept-alive connection
		req, _ := http.NewRequest("GET", s.URL(), nil)
		req.Header.Set("Authorization", "Bearer "+s.Token())
		wantOK(t, send(t, c, req))
	}
	if n := s.Connections(); n != 4 {
		t.Errorf("%d connections, want 4", n)
	}
	if n := s.PeakInFlight(); n != 1 {
		t.Errorf("peak %d requests in flight, one at a time", n)
	}
}

// TestThousandInFlight holds 1000 requests inside the server at once (DNS
// confirms whose TXT lookup waits for all of them) and counts them.
func TestThousandInFlight(t *testing.T) {
	const n = 1000
	var arrived atomic.Int32
	allIn, release := make(chan struct{}), make(chan struct{})
	s := newServer(t, sslcitest.Options{
		Logf: func(string, ...any) {},
		LookupTXT: func(ctx context.Context, name string) ([]string, error) {
			if arrived.Add(1) == n {
				close(allIn)
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		},
	})
	for i := range n {
		wantOK(t, do(t, s, "POST", s.Token(), map[string]any{"domain": fmt.Sprintf("d%d.test", i), "method": "dns"}))
	}
	c := manyClient(s)
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	var answered atomic.Int32
	for i := range n {
		wg.Go(func() {
			r, err := trySendJSON(c, s, "PUT", map[string]any{"domain": fmt.Sprintf("d%d.test", i), "method": "dns"})
			if err == nil && r.status == 400 { // the lookup found nothing
				answered.Add(1)
			}
		})
	}
	select {
	case <-allIn:
	case <-time.After(2 * time.Minute):
		t.Errorf("only %d of %d requests arrived", arrived.Load(), n)
	}
	peak := s.PeakInFlight()
	close(release)
	wg.Wait()
	if peak != n || answered.Load() != n || s.Connections() < n {
		t.Errorf("peak %d in flight, %d answered, %d connections; want %d each", peak, answered.Load(), s.Connections(), n)
	}
}

// TestThousandConcurrentLists: nothing lost, nothing repeated. The latency
// keeps the requests in the server together.
func TestThousandConcurrentLists(t *testing.T) {
	const n = 1000
	s := newServer(t, sslcitest.Options{Logf: func(string, ...any) {}, Faults: sslcitest.FaultRates{Latency: 200 * time.Millisecond}})
	c := manyClient(s)
	defer c.CloseIdleConnections()
	start := make(chan struct{})
	var wg sync.WaitGroup
	var ok atomic.Int32
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			<-start
			r, err := trySendJSON(c, s, "GET", nil)
			if err == nil && r.status == 200 && r.body["status"] == true {
				ok.Add(1)
			} else {
				errs <- fmt.Errorf("%v %d %s", err, r.status, r.raw)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
		break
	}
	if ok.Load() != n || s.CountRequests(sslcitest.OpList) != n {
		t.Errorf("%d answered, %d logged, want %d", ok.Load(), s.CountRequests(sslcitest.OpList), n)
	}
	if s.Connections() < int64(s.PeakInFlight()) || s.PeakInFlight() < 1 {
		t.Errorf("%d connections, peak %d in flight", s.Connections(), s.PeakInFlight())
	}
	t.Logf("%d lists: %d connections, peak %d in flight", n, s.Connections(), s.PeakInFlight())
}

// trySendJSON is tryDo through c.
func trySendJSON(c *http.Client, s *sslcitest.Server, method string, body any) (reply, error) {
	req, err := jsonRequest(s, method, s.Token(), body)
	if err != nil {
		return reply{}, err
	}
	return trySend(c, req)
}
