package api_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sslci/caddy-sslci/api"
)

// SetProxy sends the requests through the proxy it is given, or directly
// with nil; a plain-http endpoint never goes through a proxy off
// loopback, which would carry the token in clear, and the error shows
// no proxy credentials.
func TestSetProxy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(listBody)) }))
	defer srv.Close()
	var proxied atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.IsAbs() && r.URL.Host == strings.TrimPrefix(srv.URL, "http://") {
			proxied.Add(1)
			w.Write([]byte(listBody))
			return
		}
		http.Error(w, "not a proxy request", http.StatusBadRequest)
	}))
	defer proxy.Close()
	proxyURL, _ := url.Parse(proxy.URL)
	remote := &url.URL{Scheme: "http", User: url.UserPassword("user", "proxy-secret"), Host: "192.0.2.1:3128"}

	list := func(p func(*http.Request) (*url.URL, error)) error {
		t.Helper()
		c, err := api.New(srv.URL+"/api", testToken)
		if err != nil {
			t.Fatal(err)
		}
		c.Retry.MaxAttempts = 1
		// Whatever SetProxy does, this test dials nothing but loopback.
		c.HTTPClient.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, _, _ := net.SplitHostPort(addr); net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
				return nil, errors.New("the test dials loopback only")
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		if err := c.SetProxy(p); err != nil {
			t.Fatal(err)
		}
		_, err = c.List(context.Background())
		return err
	}

	if err := list(http.ProxyURL(proxyURL)); err != nil || proxied.Load() != 1 {
		t.Errorf("through the loopback proxy: %v, %d requests proxied", err, proxied.Load())
	}
	if err := list(nil); err != nil || proxied.Load() != 1 {
		t.Errorf("directly: %v, %d requests proxied", err, proxied.Load())
	}
	err := list(http.ProxyURL(remote))
	if !errors.Is(err, api.ErrTransport) || !strings.Contains(err.Error(), "not reached through the proxy 192.0.2.1:3128, which is not on loopback") {
		t.Errorf("through a proxy off loopback: %v", err)
	}
	if err != nil && (strings.Contains(err.Error(), "proxy-secret") || strings.Contains(err.Error(), testToken)) {
		t.Errorf("the error shows a secret: %v", err)
	}

	c, _ := api.New(srv.URL+"/api", testToken)
	c.HTTPClient = &http.Client{}
	if err := c.SetProxy(nil); err == nil {
		t.Error("SetProxy accepted a transport not the client's own")
	}
}
