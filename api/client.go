// Package api is a client for the SSLCI REST API: list certificates and
// orders, request and confirm a domain verification, finalize a certificate
// and delete records. It has no dependency on Caddy and can be used on its own.
//
// The token is sent in the Authorization header (and, for POST, PUT and
// DELETE, in the JSON body as the API documents), never in a URL; it never
// appears in an error, and redirects are never followed, so it goes nowhere
// but to the endpoint.
package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Version is this client's version, sent in the User-Agent.
const Version = "0.1.0"

// DefaultEndpoint is SSLCI's production API.
const DefaultEndpoint = "https://www.sslci.com/api"

// DefaultTimeout bounds one HTTP attempt of a client made by New.
const DefaultTimeout = 60 * time.Second

// DefaultMaxConcurrent is New's bound on the requests in flight at once.
const DefaultMaxConcurrent = 16

// Client talks to one SSLCI endpoint with one account token. Its exported
// fields may be changed before first use; it is then safe for concurrent use.
type Client struct {
	// HTTPClient makes the requests; its Timeout bounds each attempt. New
	// sets one with a transport of the client's own (see SetRootCAs); a
	// caller who replaces it keeps control of connections and TLS.
	// Redirects are never followed, whatever its CheckRedirect says.
	HTTPClient *http.Client
	// UserAgent is sent with every request.
	UserAgent string
	// Retry is the retry policy.
	Retry RetryPolicy
	// MaxResponseBytes caps a response body; a larger one is ErrTooLarge.
	MaxResponseBytes int64
	// MaxConcurrent bounds the requests in flight at once, over every caller
	// of this client, so a thousand names renewed together do not open a
	// thousand connections to SSLCI: the others wait for a slot (as long as
	// their context allows). The client's own transport keeps at most as
	// many connections. New sets DefaultMaxConcurrent; 0 or less: no bound.
	MaxConcurrent int
	// Logger receives one line per retry and per slow-down; nil logs
	// nothing. Lines never contain the token.
	Logger *slog.Logger
	// Observe, when set, is called once per HTTP attempt, e.g. for metrics:
	// the operation, the HTTP status (0 when no response arrived), how long
	// the attempt took and its error (nil on success, else an *Error). It
	// must be quick and safe for concurrent use.
	Observe func(op Op, status int, d time.Duration, err error)

	endpoint  string
	token     string
	transport *http.Transport       // New's own; HTTPClient may no longer use it
	rootsFunc func() *x509.CertPool // SetRootCAsFunc's, called by start

	startOnce sync.Once
	slots     chan struct{} // one token per request in flight; nil: no bound

	mu        sync.Mutex
	notBefore time.Time // set by a 429 or 503 with Retry-After: no request before
}

// RetryPolicy bounds retries. Which requests are retried at all depends on
// the HTTP method: see Client.do.
type RetryPolicy struct {
	MaxAttempts int           // attempts in all, the first included; 1 disables retries
	MinBackoff  time.Duration // the wait before the first retry (before jitter)
	MaxBackoff  time.Duration // the cap of the doubling wait
	// MaxRetryAfter: a longer Retry-After is not waited for (the error is
	// returned), and the whole client slows down for at most this long.
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy: four attempts over about four seconds, and server
// Retry-After hints of up to two minutes honoured.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:   4,
	MinBackoff:    500 * time.Millisecond,
	MaxBackoff:    10 * time.Second,
	MaxRetryAfter: 2 * time.Minute,
}

// New returns a client for endpoint (DefaultEndpoint when empty) with token.
func New(endpoint, token string) (*Client, error) {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if err := CheckEndpoint(endpoint); err != nil {
		return nil, err
	}
	if token == "" {
		return nil, errors.New("sslci: API token is empty")
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.OnProxyConnectResponse = proxyRefused
	return &Client{
		HTTPClient:       &http.Client{Timeout: DefaultTimeout, Transport: transport},
		UserAgent:        "caddy-sslci/" + Version + " (+https://github.com/sslci/caddy-sslci)",
		Retry:            DefaultRetryPolicy,
		MaxResponseBytes: 1 << 20,
		MaxConcurrent:    DefaultMaxConcurrent,
		endpoint:         endpoint,
		token:            token,
		transport:        transport,
	}, nil
}

// start applies the exported fields, and SetRootCAsFunc's roots, at first
// use: every request waits for it.
func (c *Client) start() {
	c.startOnce.Do(func() {
		if c.rootsFunc != nil && c.ownTransport() && !strings.HasPrefix(strings.ToLower(c.endpoint), "http:") {
			c.setRootCAs(c.rootsFunc())
		}
		if c.MaxConcurrent <= 0 {
			return
		}
		c.slots = make(chan struct{}, c.MaxConcurrent)
		if c.ownTransport() {
			c.transport.MaxConnsPerHost = c.MaxConcurrent
			c.transport.MaxIdleConnsPerHost = c.MaxConcurrent
		}
	})
}

func (c *Client) ownTransport() bool {
	return c.transport != nil && c.HTTPClient != nil && c.HTTPClient.Transport == c.transport
}

// SetRootCAs sets the roots that verify the endpoint's TLS certificate
// (nil: the system's), e.g. for a private SSLCI or a test simulator. Call
// it before first use. It fails when HTTPClient no longer uses the
// client's own transport: set the roots on the replacement instead.
func (c *Client) SetRootCAs(roots *x509.CertPool) error {
	if !c.ownTransport() {
		return errors.New("sslci: SetRootCAs: HTTPClient.Transport was replaced; set the roots in its TLS config")
	}
	c.rootsFunc = nil
	c.setRootCAs(roots)
	return nil
}

// SetRootCAsFunc is SetRootCAs for roots still being loaded: the first
// request to an https endpoint calls roots, once, and waits for it, as do
// the requests made meanwhile; a plain-http endpoint never calls it. Go's
// first load of the system's roots takes 15 to 20 ms, once per process:
// this lets it run beside whatever comes before the first request. Call it
// before first use, instead of SetRootCAs.
func (c *Client) SetRootCAsFunc(roots func() *x509.CertPool) error {
	if !c.ownTransport() {
		return errors.New("sslci: SetRootCAsFunc: HTTPClient.Transport was replaced; set the roots in its TLS config")
	}
	c.rootsFunc = roots
	return nil
}

func (c *Client) setRootCAs(roots *x509.CertPool) {
	cfg := c.transport.TLSClientConfig.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.RootCAs = roots
	c.transport.TLSClientConfig = cfg
}

// SetProxy sets the forward proxy requests to the endpoint go through:
// proxy returns its URL for a request, or nil to connect directly, as
// http.Transport.Proxy; a nil proxy always connects directly. New's
// default is the environment's (HTTPS_PROXY, NO_PROXY; a loopback endpoint
// is reached directly). Call it before first use. A plain-http endpoint
// (loopback only) goes through a loopback proxy only: a proxy on another
// host would carry the token in clear. It fails when HTTPClient no longer
// uses the client's own transport: set the proxy on the replacement.
func (c *Client) SetProxy(proxy func(*http.Request) (*url.URL, error)) error {
	if !c.ownTransport() {
		return errors.New("sslci: SetProxy: HTTPClient.Transport was replaced; set the proxy on it")
	}
	if proxy == nil {
		c.transport.Proxy = nil
		return nil
	}
	c.transport.Proxy = func(req *http.Request) (*url.URL, error) {
		u, err := proxy(req)
		if err != nil || u == nil {
			return u, err
		}
		if req.URL.Scheme == "http" && !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("the endpoint is plain http, so it is not reached through the proxy %s, which is not on loopback: the token would travel in clear", u.Host)
		}
		return u, nil
	}
	return nil
}

// proxyRefused makes a proxy's refusal to open a tunnel to the endpoint
// an error naming the proxy (its host only: no credentials) and its
// answer, where Go's transport would say only "Forbidden".
func proxyRefused(_ context.Context, proxy *url.URL, req *http.Request, resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return fmt.Errorf("the network proxy %s refused to connect to %s: %s", proxy.Host, req.Host, resp.Status)
}

// CheckEndpoint reports whether endpoint is usable: an absolute https URL,
// or http to a loopback host only, so a token never crosses a network in
// clear. It may carry no credentials, query or fragment. Its errors show
// the scheme, host and path only.
func CheckEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return errors.New("sslci: the endpoint is not an absolute URL (want https://host/path; the value is not shown)")
	}
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	var extra []string
	if u.User != nil {
		extra = append(extra, "user info")
	}
	if u.RawQuery != "" || u.ForceQuery {
		extra = append(extra, "a query string")
	}
	if u.Fragment != "" {
		extra = append(extra, "a fragment")
	}
	if len(extra) > 0 {
		return fmt.Errorf("sslci: endpoint %q: the URL has %s (not shown); it must not contain credentials, a query or a fragment: the token goes in the Authorization header, never in the URL",
			shown, strings.Join(extra, " and "))
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("sslci: endpoint %q: plain http is allowed only for loopback hosts (the token would travel in clear); use https", shown)
	default:
		return fmt.Errorf("sslci: endpoint %q: scheme must be https", shown)
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Endpoint returns the API URL the client uses.
func (c *Client) Endpoint() string { return c.endpoint }
