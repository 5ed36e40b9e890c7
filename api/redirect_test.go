package api_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sslci/caddy-sslci/api"
)

const testToken = "secret-token-0123456789"

// every operation once, with arguments that do not matter here.
var everyOp = []struct {
	op   api.Op
	call func(context.Context, *api.Client) error
}{
	{api.OpList, func(ctx context.Context, c *api.Client) error { _, err := c.List(ctx); return err }},
	{api.OpRequest, func(ctx context.Context, c *api.Client) error {
		_, err := c.RequestVerification(ctx, "a.example.test", api.MethodHTTP)
		return err
	}},
	{api.OpConfirm, func(ctx context.Context, c *api.Client) error {
		_, err := c.ConfirmVerification(ctx, api.ConfirmRequest{Domain: "a.example.test", OrderID: 3})
		return err
	}},
	{api.OpFinalize, func(ctx context.Context, c *api.Client) error {
		_, err := c.Finalize(ctx, []string{"a.example.test"}, nil)
		return err
	}},
	{api.OpDelete, func(ctx context.Context, c *api.Client) error { return c.Delete(ctx, api.RecordOrder, 3) }},
}

// A redirect is never followed, whatever its status: 307 and 308 would
// re-send the body with the token, 301 to 303 would turn the operation into
// a GET. It is an error of its own, not retried, naming the status and the
// target's scheme and host only.
func TestRedirectsAreRefused(t *testing.T) {
	var targetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
		w.Write([]byte(`{"status":true}`))
	}))
	defer target.Close()
	location := target.URL + "/hidden/path?q=hidden-query"

	for _, useTLS := range []bool{false, true} {
		for _, status := range []int{301, 302, 303, 307, 308} {
			name := strconv.Itoa(status)
			if useTLS {
				name += " from https"
			}
			t.Run(name, func(t *testing.T) {
				var hits atomic.Int32
				handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					hits.Add(1)
					w.Header().Set("Location", location)
					w.WriteHeader(status)
				})
				var srv *httptest.Server
				if useTLS {
					srv = httptest.NewTLSServer(handler)
				} else {
					srv = httptest.NewServer(handler)
				}
				defer srv.Close()
				c, err := api.New(srv.URL+"/api", testToken)
				if err != nil {
					t.Fatal(err)
				}
				c.Retry = fastRetries
				if useTLS {
					roots := x509.NewCertPool()
					roots.AddCert(srv.Certificate())
					if err := c.SetRootCAs(roots); err != nil {
						t.Fatal(err)
					}
				}
				for _, o := range everyOp {
					before := hits.Load()
					err := o.call(context.Background(), c)
					var apiErr *api.Error
					if !errors.Is(err, api.ErrRedirect) || !errors.As(err, &apiErr) {
						t.Fatalf("%s: err = %v, want ErrRedirect", o.op, err)
					}
					if apiErr.Op != o.op || apiErr.StatusCode != status || apiErr.Attempts != 1 || hits.Load()-before != 1 {
						t.Errorf("%s: err = %+v after %d requests, want status %d, one attempt", o.op, apiErr, hits.Load()-before, status)
					}
					msg := err.Error()
					if !strings.Contains(msg, strconv.Itoa(status)) || !strings.Contains(msg, "to "+target.URL+" ") {
						t.Errorf("%s: %q does not name the status and %s", o.op, msg, target.URL)
					}
					for _, hidden := range []string{"hidden", testToken} {
						if strings.Contains(msg, hidden) {
							t.Errorf("%s: %q shows %q", o.op, msg, hidden)
						}
					}
				}
			})
		}
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("the redirect target received %d requests", n)
	}
}

// Even a caller's HTTP client that follows redirects does not follow them.
func TestRedirectRefusedWithCallersHTTPClient(t *testing.T) {
	var targetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { targetHits.Add(1) }))
	defer target.Close()
	srv := httptest.NewServer(http.RedirectHandler(target.URL+"/api", http.StatusTemporaryRedirect))
	defer srv.Close()
	c, _ := api.New(srv.URL+"/api", testToken)
	c.HTTPClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return nil }}
	if _, err := c.List(context.Background()); !errors.Is(err, api.ErrRedirect) {
		t.Fatalf("err = %v, want ErrRedirect", err)
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("the redirect target received %d requests", n)
	}
}
