// Package sslci is a Caddy module, tls.issuance.sslci, that gets TLS
// certificates from SSLCI's REST API. Caddy keeps storage, locking and
// renewal; this issuer turns one CSR into one certificate: it verifies each
// name (HTTP-01 answered by Caddy itself, or a DNS TXT record), finalizes the
// SAN set and checks what comes back.
package sslci

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/issuance"
	"github.com/sslci/caddy-sslci/internal/ledger"
)

func init() {
	caddy.RegisterModule(new(Issuer))
}

// Issuer gets certificates from SSLCI (https://www.sslci.com). Each name is
// verified by SSLCI before the certificate is made: by default over HTTP,
// answered by Caddy's own HTTP server with nothing to configure; or by DNS
// with a DNS provider module. A name verified less than 28 days ago is not
// verified again, so such a renewal costs a single API request; SSLCI's
// 90-day certificates renew at day 60, and verify every name again.
type Issuer struct {
	// The SSLCI API token. REQUIRED. Placeholders such as
	// {env.SSLCI_TOKEN} are replaced when the config is loaded.
	Token string `json:"token,omitempty"`

	// The SSLCI API URL. Default: https://www.sslci.com/api. Plain http is
	// accepted only for loopback hosts (a local simulator), so the token
	// never crosses a network in clear.
	Endpoint string `json:"endpoint,omitempty"`

	// How SSLCI verifies each name: "http" or "dns". Default: "dns" when a
	// DNS provider is configured, "http" otherwise. Wildcard names need "dns".
	Method string `json:"method,omitempty"`

	// The DNS challenge configuration, exactly as the ACME issuer's:
	// a provider module from the dns.providers namespace, plus TTL,
	// propagation delay and timeout, resolvers and an override domain.
	DNS *caddytls.DNSChallengeConfig `json:"dns,omitempty"`

	// The host to bind to when this issuer must answer the HTTP check
	// itself, which happens only when nothing listens on the HTTP port
	// (otherwise Caddy's HTTP server answers it). Default: all interfaces.
	ListenHost string `json:"listen_host,omitempty"`

	// The port SSLCI's HTTP check arrives on, if port 80 is forwarded to
	// another one. Default: Caddy's HTTP port.
	AlternateHTTPPort int `json:"alternate_http_port,omitempty"`

	// The forward proxy SSLCI's API is reached through, as the ACME
	// issuer's network_proxy: a caddy.network_proxy module, such as
	// {"from": "url", "url": "http://proxy.internal:3128"} (placeholders in
	// the URL, e.g. {env.HTTPS_PROXY}, are replaced at each request), or
	// {"from": "none"} to connect directly. Default: the HTTPS_PROXY and
	// NO_PROXY environment variables. A plain-http endpoint (loopback only)
	// goes through a proxy on loopback only, so the token never crosses a
	// network in clear.
	NetworkProxyRaw json.RawMessage `json:"network_proxy,omitempty" caddy:"namespace=caddy.network_proxy inline_key=from"`

	// How long one API request may take. Default: 60s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// The most API requests in flight at once, over every certificate
	// this issuer obtains (and every other issuer with the same endpoint,
	// token and client settings), so that a thousand names obtained together
	// do not hammer SSLCI: the others wait their turn. It also bounds the
	// connections kept to the API. Default: 16.
	MaxConcurrentRequests int `json:"max_concurrent_requests,omitempty"`

	// How long to keep asking SSLCI to confirm a verification it reports as
	// still in progress. Default: 5m.
	VerificationTimeout caddy.Duration `json:"verification_timeout,omitempty"`

	// Refuse certificates for a private key SSLCI generated. SSLCI's
	// documented finalize makes a key itself; by default such a
	// certificate is accepted and SSLCI's key is stored in place of the one
	// Caddy generated. With this set, only a certificate for Caddy's own
	// key (the CSR's) is accepted, and anything else is an error.
	RequireCSRKey bool `json:"require_csr_key,omitempty"`

	// Files of root CA certificates (PEM) to trust besides the system's
	// (the ACME issuer's option of the same name replaces them): for the
	// endpoint's HTTPS and for the certificates SSLCI returns, which are
	// refused unless they chain to a trusted root. Use it for a private
	// SSLCI or a test simulator. Placeholders are replaced when the config
	// is loaded.
	TrustedRootsPEMFiles []string `json:"trusted_roots_pem_files,omitempty"`

	// Delete at SSLCI the certificate a renewal replaced, once the renewed
	// one is stored: what `caddy sslci prune` does for superseded
	// certificates, done for the renewed names right away, in the
	// background. It costs one more list request per renewal, and one
	// delete request per certificate deleted. Only certificates this Caddy
	// can prove it made (from its records in storage) are deleted, never
	// the one it serves. Default: off (they stay at SSLCI until pruned).
	DeleteReplaced bool `json:"delete_replaced,omitempty"`

	client    *api.Client
	clientKey string // the client's key in clients, set by Provision
	// proxy gives the client its proxy, from NetworkProxyRaw (loadProxy).
	proxy func(*http.Request) (*url.URL, error)
	// clientMetrics is the shared client's metrics slot: the issuer
	// provisioned last (the newest config) receives its API metrics.
	clientMetrics *atomic.Pointer[metrics]
	logger        *zap.Logger
	issuerKey     string        // IssuerKey, set by Provision
	account       string        // a non-secret id of the token, to keep accounts' records apart in storage
	roots         *trustedRoots // the system's plus TrustedRootsPEMFiles; nil: the system's
	metrics       *metrics

	// acme answers the HTTP check inside Caddy: see GetACMEIssuer.
	acme *caddytls.ACMEIssuer

	// keys are SSLCI's keys waiting for certmagic to store their
	// certificate: see keystorage.go.
	keys serverKeys

	ledger *ledger.Ledger   // what this Caddy created at SSLCI, in the policy's storage
	engine *issuance.Issuer // the flow of one Issue

	replaced replacedDeletions // delete_replaced: replaced.go

	// magic is the certmagic config of this issuer's automation policy,
	// the latest SetConfig gave: `caddy sslci renew` renews through it
	// (admin.go).
	magic atomic.Pointer[certmagic.Config]

	// caddyCtx is the context of the config the issuer was provisioned in:
	// its HTTP app's servers are looked up at a verification (challenge.go).
	caddyCtx caddy.Context
	// stopped is done once the issuer is cleaned up: what runs in the
	// background for it stops.
	stopped context.Context
	stop    context.CancelFunc
}

// CaddyModule returns the Caddy module information.
func (*Issuer) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.issuance.sslci",
		New: func() caddy.Module { return new(Issuer) },
	}
}

// Provision sets up the issuer. It is the one place the config's meaning is
// checked (the Caddyfile parser checks only its syntax), after placeholders
// are replaced, as Caddy's ACME issuer does. Its errors, and the api
// package's it returns, start with "sslci: ".
func (iss *Issuer) Provision(ctx caddy.Context) error {
	iss.caddyCtx = ctx
	iss.logger = ctx.Logger()
	iss.stopped, iss.stop = context.WithCancel(context.Background())
	repl := caddy.NewReplacer()

	// The replacer's errors quote what they could not replace, which may be
	// part of the token itself: say what is wrong without them.
	token, err := repl.ReplaceOrErr(iss.Token, true, true)
	iss.Token = strings.TrimSpace(token)
	if err != nil || iss.Token == "" {
		return errors.New("sslci: the API token is empty, or names an unknown or empty placeholder " +
			"(set `token`, e.g. to {env.SSLCI_TOKEN}, and check that the variable is set)")
	}
	if iss.Endpoint, err = repl.ReplaceOrErr(iss.Endpoint, true, true); err != nil {
		return fmt.Errorf("sslci: replacing placeholders in the endpoint: %w", err)
	}
	if iss.Endpoint == "" {
		iss.Endpoint = api.DefaultEndpoint
	}
	if iss.Method == "" {
		iss.Method = api.MethodHTTP
		if iss.DNS != nil {
			iss.Method = api.MethodDNS
		}
	}
	if err := iss.checkConfig(); err != nil {
		return err
	}
	iss.issuerKey = issuerKeyFor(iss.Endpoint)

	if iss.roots, err = loadTrustedRoots(repl, iss.TrustedRootsPEMFiles); err != nil {
		return err
	}
	if iss.proxy, err = loadProxy(ctx, iss.NetworkProxyRaw); err != nil {
		return err
	}
	if err := iss.loadClient(ctx); err != nil {
		return err
	}
	if iss.metrics, err = newMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("sslci: registering metrics: %w", err)
	}
	iss.clientMetrics.Store(iss.metrics)
	sum := sha256.Sum256([]byte("caddy-sslci account\x00" + iss.Token))
	iss.account = hex.EncodeToString(sum[:8])

	iss.ledger = &ledger.Ledger{Keys: ledger.Keys{IssuerKey: iss.issuerKey, Account: iss.account}, Client: iss.client, Logger: iss.logger}
	iss.engine = &issuance.Issuer{
		Endpoint:            iss.Endpoint,
		Method:              iss.Method,
		RequireCSRKey:       iss.RequireCSRKey,
		VerificationTimeout: time.Duration(iss.VerificationTimeout),
		Roots:               iss.roots.Pool,
		HTTPPort:            iss.httpPort,
		Retry:               issuance.DefaultRetry,
		Client:              iss.client,
		Ledger:              iss.ledger,
		Metrics:             iss.metrics,
		Logger:              iss.logger,
		RememberKey:         iss.rememberServerKey,
	}
	switch iss.Method {
	case api.MethodHTTP:
		iss.engine.Solver = &httpSolver{iss: iss}
	case api.MethodDNS:
		if iss.engine.Solver, err = loadDNSSolver(ctx, iss.DNS, tlsResolvers(ctx), iss.logger); err != nil {
			return err
		}
	}

	// The ACME issuer lends us Caddy's HTTP-challenge plumbing: Caddy's HTTP
	// servers ask every issuer with GetACMEIssuer to answer a challenge
	// request, and certmagic's answer looks the challenge up in storage under
	// the key of every issuer of the policy, ours included. It never issues.
	iss.acme = new(caddytls.ACMEIssuer)
	if iss.AlternateHTTPPort != 0 {
		iss.acme.Challenges = &caddytls.ChallengesConfig{HTTP: &caddytls.HTTPChallengeConfig{AlternatePort: iss.AlternateHTTPPort}}
	}
	if err := iss.acme.Provision(ctx); err != nil {
		return fmt.Errorf("sslci: setting up the HTTP check: %w", err)
	}
	// Last: a context made by caddy.NewContext alone has no storage (the
	// config errors above are tested with one). SetConfig replaces it with
	// the automation policy's.
	iss.ledger.SetStorage(ownStorage(ctx.Storage()))
	return nil
}

// checkConfig checks what the config means, once its placeholders are
// replaced and its defaults applied.
func (iss *Issuer) checkConfig() error {
	if err := api.CheckEndpoint(iss.Endpoint); err != nil {
		return err
	}
	switch iss.Method {
	case api.MethodHTTP:
		if iss.DNS != nil {
			return errors.New("sslci: method is http but a DNS challenge is configured; remove one of them")
		}
	case api.MethodDNS:
		if iss.DNS == nil || len(iss.DNS.ProviderRaw) == 0 {
			return errors.New(errNoDNSProvider)
		}
	default:
		return fmt.Errorf("sslci: unknown method %q: want http or dns", iss.Method)
	}
	if iss.Timeout < 0 || iss.VerificationTimeout < 0 {
		return errors.New("sslci: timeouts must not be negative")
	}
	if iss.MaxConcurrentRequests < 0 {
		return fmt.Errorf("sslci: max_concurrent_requests %d is negative", iss.MaxConcurrentRequests)
	}
	if d := iss.DNS; d != nil && (d.TTL < 0 || d.PropagationDelay < 0 || d.PropagationTimeout < -1) {
		return errors.New("sslci: dns_ttl and propagation_delay must not be negative, nor propagation_timeout below -1 (-1: do not check)")
	}
	if iss.AlternateHTTPPort < 0 || iss.AlternateHTTPPort > 65535 {
		return fmt.Errorf("sslci: alternate_http_port %d is not a port", iss.AlternateHTTPPort)
	}
	return nil
}

// errNoDNSProvider: the TLS app's global DNS provider (Caddyfile `dns`,
// JSON apps.tls.dns) cannot stand in for the issuer's own. The TLS app
// keeps the loaded provider in an unexported field, which only Caddy's ACME
// issuer, in the same package, reads; and it loads it with ctx.LoadModule,
// which clears the raw JSON (DNSRaw) before any issuer is provisioned, so it
// cannot be loaded again either.
const errNoDNSProvider = "sslci: method dns needs a DNS provider in the issuer's own block (`dns <provider> ...`, JSON dns.provider); " +
	"a global `dns` provider is not used: Caddy lets only its own ACME issuer reach it"

// tlsResolvers are the TLS app's resolvers (Caddyfile `tls_resolvers`,
// JSON apps.tls.resolvers), which the DNS check uses when the issuer names
// none, as Caddy's ACME issuer does. Caddy registers the TLS app before
// provisioning it, so an issuer of its automation policies gets it here;
// the `caddy sslci` commands, which provision issuers outside of it, put the
// config's resolvers in ctx.
func tlsResolvers(ctx caddy.Context) []string {
	if app, err := ctx.AppIfConfigured("tls"); err == nil {
		if tlsApp, ok := app.(*caddytls.TLS); ok {
			return tlsApp.Resolvers
		}
	}
	if ctx.Context == nil {
		return nil
	}
	resolvers, _ := ctx.Value(tlsResolversKey{}).([]string)
	return resolvers
}

type tlsResolversKey struct{}

// SetConfig is called by Caddy with the certmagic config this issuer's
// automation policy uses. We take its storage (so challenges and
// verification records are shared by every Caddy on that storage), hand it
// to the embedded ACME issuer that answers HTTP checks, and wrap it so that
// SSLCI's private keys are stored safely (keystorage.go).
func (iss *Issuer) SetConfig(cfg *certmagic.Config) {
	iss.magic.Store(cfg)
	if cfg.Storage != nil {
		iss.ledger.SetStorage(ownStorage(cfg.Storage))
	}
	iss.ledger.StartSweep(sweepDelay) // what a Caddy that stopped left at SSLCI
	if iss.acme != nil {
		iss.acme.SetConfig(cfg)
	}
	iss.watchRenewals(cfg) // delete_replaced: replaced.go
	iss.watchExpiry(cfg)   // the expiry metrics: metrics.go
	iss.guardKeys(cfg)
	if iss.engine != nil {
		iss.engine.KeyPolicy = keyPolicyOf(cfg) // issuer.go
		iss.engine.RenewalRatio = cfg.RenewalWindowRatio
	}
}

// GetACMEIssuer returns the embedded ACME issuer that answers SSLCI's HTTP
// check inside Caddy's HTTP servers. It is never used to issue.
func (iss *Issuer) GetACMEIssuer() *caddytls.ACMEIssuer { return iss.acme }

// IssuerKey is distinct per endpoint, so certificates from the simulator
// and from production never overwrite each other in storage. Caddy asks
// only a provisioned issuer (certmagic's Config.Issuers); an unprovisioned
// one answers for its Endpoint as configured, so a tool can find its storage.
func (iss *Issuer) IssuerKey() string {
	if iss.issuerKey != "" {
		return iss.issuerKey
	}
	return issuerKeyFor(iss.Endpoint)
}

func issuerKeyFor(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || endpoint == "" {
		return "sslci"
	}
	return "sslci-" + strings.Trim(strings.NewReplacer(":", "-", "/", "-").Replace(u.Host+u.Path), "-")
}

// sweepDelay: the issuances certmagic starts with Caddy settle their own
// names first (resuming their orders); the sweep settles the rest.
var sweepDelay = time.Minute

func (iss *Issuer) getStorage() certmagic.Storage { return iss.ledger.Storage() }

// Interface guards
var (
	_ caddy.Module          = (*Issuer)(nil)
	_ caddy.Provisioner     = (*Issuer)(nil)
	_ caddy.CleanerUpper    = (*Issuer)(nil)
	_ certmagic.Issuer      = (*Issuer)(nil)
	_ certmagic.PreChecker  = (*Issuer)(nil)
	_ caddytls.ConfigSetter = (*Issuer)(nil)
)

// trustedRoots verify SSLCI's HTTPS and the certificates it returns: the
// system's roots plus the trusted_roots files. Go's first load of the
// system's roots takes 15 to 20 ms, once per process, and was the whole
// extra cost of a config load with one name: so Provision reads and checks
// the files, the pool is built beside the rest of the config load, and the
// first request over TLS or the first certificate check waits for it.
type trustedRoots struct {
	done chan struct{}
	pool *x509.CertPool
}

// Pool waits for the pool; nil (no trusted_roots): the system's.
func (r *trustedRoots) Pool() *x509.CertPool {
	if r == nil {
		return nil
	}
	<-r.done
	return r.pool
}

// warmSystemRoots starts Go's one load of the system's roots, which verify
// the endpoint's TLS and every certificate even without trusted_roots.
var warmSystemRoots = sync.OnceFunc(func() { go x509.SystemCertPool() })

// loadTrustedRoots reads the PEM files (placeholders replaced) and starts
// building their pool; nil (the system's) when there are none.
func loadTrustedRoots(repl *caddy.Replacer, files []string) (*trustedRoots, error) {
	if len(files) == 0 {
		warmSystemRoots()
		return nil, nil
	}
	var pems [][]byte
	for _, f := range files {
		name, err := repl.ReplaceOrErr(f, true, true)
		if err != nil {
			return nil, fmt.Errorf("sslci: trusted_roots: %w", err)
		}
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("sslci: trusted_roots: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("sslci: trusted_roots: %s holds no PEM certificate", name)
		}
		pems = append(pems, data)
	}
	r := &trustedRoots{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool() // no system roots here: only the files'
		}
		for _, data := range pems {
			pool.AppendCertsFromPEM(data)
		}
		r.pool = pool
	}()
	return r, nil
}
