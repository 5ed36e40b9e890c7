package sslci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/issuance"
)

// clients holds the API clients in use, one per endpoint, token and client
// settings, shared by every issuer with the same: the bound on requests in
// flight and SSLCI's Retry-After then hold for the account, not per issuer,
// however many issuers Caddy runs (one per automation policy that names
// one, and the old and new ones side by side during a config reload).
var clients = caddy.NewUsagePool()

// clientConfig is what makes two issuers' clients the same.
type clientConfig struct {
	Endpoint      string
	Token         string
	Timeout       time.Duration
	MaxConcurrent int
	// TrustedRoots are the trusted_roots files, for the endpoint's TLS.
	TrustedRoots []string
	// NetworkProxy is the network_proxy module's JSON: another proxy,
	// another client.
	NetworkProxy string
}

// key is a digest of the config: the token is not kept as a map key.
func (c clientConfig) key() string {
	data, _ := json.Marshal(c) // strings and numbers only: cannot fail
	sum := sha256.Sum256(append([]byte("caddy-sslci client\x00"), data...))
	return hex.EncodeToString(sum[:])
}

// sharedClient is a pooled client; its connections are closed when the
// last issuer using it is cleaned up.
type sharedClient struct {
	*api.Client
	// metrics is where the client's Observe hook counts: Caddy makes a
	// metrics registry per config load, so the newest issuer sets it.
	metrics *atomic.Pointer[metrics]
}

func (c sharedClient) Destruct() error {
	c.HTTPClient.CloseIdleConnections()
	return nil
}

// loadClient sets iss.client to the shared client for its settings, making
// it if no other issuer has; Cleanup lets go of it.
func (iss *Issuer) loadClient(ctx caddy.Context) error {
	cfg := clientConfig{
		Endpoint:      iss.Endpoint,
		Token:         iss.Token,
		Timeout:       api.DefaultTimeout,
		MaxConcurrent: api.DefaultMaxConcurrent,
		TrustedRoots:  iss.TrustedRootsPEMFiles,
		NetworkProxy:  string(iss.NetworkProxyRaw),
	}
	if iss.Timeout != 0 {
		cfg.Timeout = time.Duration(iss.Timeout)
	}
	if iss.MaxConcurrentRequests != 0 {
		cfg.MaxConcurrent = iss.MaxConcurrentRequests
	}
	key := cfg.key()
	val, _, err := clients.LoadOrNew(key, func() (caddy.Destructor, error) {
		c, err := api.New(cfg.Endpoint, cfg.Token)
		if err != nil {
			return nil, err
		}
		c.HTTPClient.Timeout = cfg.Timeout
		c.MaxConcurrent = cfg.MaxConcurrent
		// One retry policy: the issuance's steps retry (issuance/retry.go),
		// the client makes one attempt per call.
		c.Retry.MaxAttempts = 1
		if iss.roots != nil {
			if err := c.SetRootCAsFunc(iss.roots.Pool); err != nil {
				return nil, err
			}
		}
		if err := c.SetProxy(iss.proxy); err != nil {
			return nil, err
		}
		c.Logger = slog.New(issuance.NamesHandler{Handler: ctx.Slogger().Handler()})
		slot := new(atomic.Pointer[metrics])
		c.Observe = func(op api.Op, status int, d time.Duration, err error) {
			if m := slot.Load(); m != nil {
				m.observe(op, status, d, err)
			}
		}
		return sharedClient{Client: c, metrics: slot}, nil
	})
	if err != nil {
		return err
	}
	shared := val.(sharedClient)
	iss.client, iss.clientKey, iss.clientMetrics = shared.Client, key, shared.metrics
	return nil
}

// loadProxy loads the network_proxy module as the ACME issuer does: the
// function that gives the proxy for each API request. Without one, it is
// the environment's (HTTPS_PROXY); the `none` module's nil connects
// directly. The raw JSON is left as given: it keys the shared client.
func loadProxy(ctx caddy.Context, raw json.RawMessage) (func(*http.Request) (*url.URL, error), error) {
	if len(raw) == 0 {
		return http.ProxyFromEnvironment, nil
	}
	// LoadModule clears the field it loads: a copy keeps the config.
	loaded := struct {
		NetworkProxyRaw json.RawMessage `caddy:"namespace=caddy.network_proxy inline_key=from"`
	}{raw}
	mod, err := ctx.LoadModule(&loaded, "NetworkProxyRaw")
	if err != nil {
		return nil, fmt.Errorf("sslci: loading the network_proxy module: %w", err)
	}
	producer, ok := mod.(caddy.ProxyFuncProducer)
	if !ok {
		return nil, fmt.Errorf("sslci: network_proxy module %T gives no proxy function", mod)
	}
	proxy := producer.ProxyFunc()
	if proxy == nil {
		return nil, nil
	}
	return func(req *http.Request) (*url.URL, error) {
		// The url module replaces placeholders with the request's replacer,
		// which Caddy's HTTP server sets and an API request has not: the
		// global placeholders ({env.*}, {file.*}) then.
		if req.Context().Value(caddy.ReplacerCtxKey) == nil {
			req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		}
		u, err := proxy(req)
		if err != nil {
			return nil, fmt.Errorf("network_proxy: %w", err)
		}
		return u, nil
	}, nil
}

// Cleanup lets go of the issuer's API client.
func (iss *Issuer) Cleanup() error {
	if iss.stop != nil {
		iss.stop()
	}
	if iss.ledger != nil {
		iss.ledger.StopSweep()
	}
	iss.stopReplaced() // replaced.go
	if iss.clientKey == "" {
		return nil
	}
	_, err := clients.Delete(iss.clientKey)
	iss.clientKey = ""
	return err
}
