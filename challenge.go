package sslci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/dnsverify"
	"github.com/sslci/caddy-sslci/internal/issuance"
	"github.com/sslci/caddy-sslci/internal/ledger"
)

// This file is the Caddy side of the challenges: the HTTP solver, answered
// by Caddy's own HTTP servers through certmagic's challenge handler (or by
// a listener of its own where none listens), and the DNS solver over a
// dns.providers module. Both are issuance.Solver.

// httpSolver answers SSLCI's HTTP check. The challenge is written to
// storage as certmagic's distributed solver writes an ACME one: JSON of an
// acme.Challenge at acme/<issuer key>/challenge_tokens/<name>.json. Every
// Caddy HTTP server, before any route, asks the ACME issuer of each policy
// (GetACMEIssuer) to HandleHTTPChallenge; certmagic's getACMEChallengeInfo
// then looks for that file under the key of every issuer of the policy, ours
// included, so any Caddy sharing the storage answers the check
// (TestChallengeFoundByCertmagic holds certmagic to it). Where nothing
// listens on the HTTP port, the solver serves the check itself while it lasts.
type httpSolver struct {
	iss *Issuer

	// answeredAt is when the HTTP port last answered a challenge as SSLCI
	// needs: checkPortHolder is skipped for portCheckInterval after, and
	// while a probe is out (probing), so a thousand names starting at once
	// cost one probe, not a thousand.
	mu         sync.Mutex
	answeredAt time.Time
	probing    bool
}

const portCheckInterval = time.Minute

const challengeBasePath = "/.well-known/acme-challenge/"

func (s *httpSolver) Present(ctx context.Context, v *api.Verification, rec *ledger.OrderRecord) (func(), error) {
	iss := s.iss
	if v.FilePath != challengeBasePath+v.Token || v.Token == "" {
		return nil, fmt.Errorf("SSLCI asked for the file %q; only %s<token> can be answered", v.FilePath, challengeBasePath)
	}
	storage := iss.getStorage()
	key, err := iss.ledger.StoreChallenge(ctx, v, rec)
	if err != nil {
		return nil, err
	}
	release, inUse := func() {}, true
	if !iss.awaitHTTPApp(ctx) {
		release, inUse = s.listen()
	}
	if inUse {
		s.checkPortHolder(ctx, v)
	}
	return func() {
		release()
		ctx, cancel := ledger.Detached(ctx)
		defer cancel()
		if err := storage.Delete(ctx, key); err != nil {
			iss.logger.Error("deleting the challenge from storage", zap.String("key", key), zap.Error(err))
		}
	}, nil
}

// httpPort is the port SSLCI's check arrives on: the configured one, or
// Caddy's HTTP port (which the HTTP app fills into the embedded ACME
// issuer), or 80.
func (iss *Issuer) httpPort() int {
	if iss.AlternateHTTPPort != 0 {
		return iss.AlternateHTTPPort
	}
	if c := iss.acme.Challenges; c != nil && c.HTTP != nil && c.HTTP.AlternatePort != 0 {
		return c.HTTP.AlternatePort
	}
	return certmagic.HTTPChallengePort
}

// fallbackServers are this process's own challenge listeners, by address,
// shared by the names being verified at the same time. portsHeld is when
// each address was last found held by another server (a bind refused, or
// the HTTP app's server answering): binding a port in use costs the kernel
// a walk of every socket on that port, thousands in a burst of checks (2.4 s
// of Caddy's CPU at 10,000 names), so it is looked at again only
// portRebindInterval later.
var (
	fallbackMu      sync.Mutex
	fallbackServers = map[string]*fallbackServer{}
	portsHeld       = map[string]time.Time{}
)

var portRebindInterval = 10 * time.Second

// httpAppWait bounds how long a verification waits for the HTTP app's own
// server on the HTTP port to listen (awaitHTTPApp).
const httpAppWait = 10 * time.Second

// heldRecently says whether addr was found held within portRebindInterval.
func heldRecently(addr string) bool {
	fallbackMu.Lock()
	defer fallbackMu.Unlock()
	return heldRecentlyLocked(addr)
}

func heldRecentlyLocked(addr string) bool {
	at, ok := portsHeld[addr]
	return ok && time.Since(at) < portRebindInterval
}

// listenAddr is where the fallback listener would listen.
func (iss *Issuer) listenAddr() string {
	return net.JoinHostPort(iss.ListenHost, strconv.Itoa(iss.httpPort()))
}

type fallbackServer struct {
	srv   *http.Server
	users int
}

// awaitHTTPApp says whether the HTTP port is not to be bound: found held
// recently, or a server of this Caddy's HTTP app listens on it, waited for
// (up to httpAppWait) until it does. At a start, certmagic may begin
// obtaining the certificates of tls.certificates.automate before the HTTP
// app has bound its listeners (Caddy starts its apps in no fixed order; at
// 10,000 names the TLS app's start took over a second): a fallback
// listener taken then would make the HTTP app's bind fail, and the whole
// config with it.
func (iss *Issuer) awaitHTTPApp(ctx context.Context) bool {
	own := iss.listenAddr()
	if heldRecently(own) {
		return true
	}
	addrs := iss.httpAppAddrs(iss.httpPort())
	if len(addrs) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, httpAppWait)
	defer cancel()
	for {
		for _, addr := range addrs {
			if c, err := (&net.Dialer{Timeout: 250 * time.Millisecond}).DialContext(ctx, "tcp", addr); err == nil {
				c.Close()
				fallbackMu.Lock()
				portsHeld[own] = time.Now()
				fallbackMu.Unlock()
				return true
			}
		}
		select {
		case <-ctx.Done():
			iss.logger.Warn("the HTTP app's server on the HTTP port does not answer; SSLCI's check may fail",
				zap.Strings("addresses", addrs))
			return true // never take the port of Caddy's own server
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// httpAppAddrs are the addresses to reach the servers of this Caddy's HTTP
// app that listen on port (a wildcard host as loopback), if any.
func (iss *Issuer) httpAppAddrs(port int) []string {
	if iss.caddyCtx.Context == nil {
		return nil
	}
	app, err := iss.caddyCtx.AppIfConfigured("http")
	httpApp, ok := app.(*caddyhttp.App)
	if err != nil || !ok {
		return nil
	}
	var addrs []string
	for _, srv := range httpApp.Servers {
		for _, l := range srv.Listen {
			na, err := caddy.ParseNetworkAddress(l)
			if err != nil || na.IsUnixNetwork() || uint(port) < na.StartPort || uint(port) > na.EndPort {
				continue
			}
			host := na.Host
			if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
				host = "127.0.0.1"
			}
			addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(port)))
		}
	}
	return addrs
}

// listen starts serving challenges on the HTTP port if nothing listens
// there yet, and returns the function that stops it after the last user.
// A port in use (inUse) is the normal case: Caddy's HTTP server is there.
func (s *httpSolver) listen() (release func(), inUse bool) {
	iss := s.iss
	addr := iss.listenAddr()
	fallbackMu.Lock()
	defer fallbackMu.Unlock()
	if fs, ok := fallbackServers[addr]; ok {
		fs.users++
		return func() { s.release(addr) }, false
	}
	if heldRecentlyLocked(addr) {
		return func() {}, true
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		inUse := errors.Is(err, syscall.EADDRINUSE)
		if inUse {
			portsHeld[addr] = time.Now()
		} else {
			iss.logger.Warn("cannot listen for the HTTP check; relying on another server on that port",
				zap.String("address", addr), zap.Error(err))
		}
		return func() {}, inUse
	}
	delete(portsHeld, addr)
	iss.logger.Info("nothing listens on the HTTP port; serving the SSLCI check there during the verification", zap.String("address", addr))
	fs := &fallbackServer{users: 1, srv: &http.Server{
		Handler:           http.HandlerFunc(iss.serveChallenge),
		ReadHeaderTimeout: 10 * time.Second,
	}}
	fallbackServers[addr] = fs
	go fs.srv.Serve(ln) //nolint:errcheck // returns when released
	return func() { s.release(addr) }, false
}

// checkPortHolder asks what holds the HTTP port for the challenge just
// stored, as SSLCI will: Caddy's HTTP server (or a proxy to a Caddy on the
// same storage) answers it. Anything else answering means SSLCI's check
// will fail, so it is said here, naming the port, rather than left to
// SSLCI's error. Nothing reachable on loopback (Caddy bound to another
// address only) proves nothing, and is not warned about.
func (s *httpSolver) checkPortHolder(ctx context.Context, v *api.Verification) {
	iss := s.iss
	s.mu.Lock()
	if s.probing || time.Since(s.answeredAt) < portCheckInterval {
		s.mu.Unlock()
		return
	}
	s.probing = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.probing = false
		s.mu.Unlock()
	}()
	port := iss.httpPort()
	host := iss.ListenHost
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, body, err := getChallenge(ctx, net.JoinHostPort(host, strconv.Itoa(port)), "http://"+v.Domain+v.FilePath)
	if err != nil {
		iss.logger.Debug("could not ask what holds the HTTP port", zap.Int("port", port), zap.Error(err))
		return
	}
	if isKeyAuthorization(resp, body, v.Content) {
		s.mu.Lock()
		s.answeredAt = time.Now()
		s.mu.Unlock()
		return
	}
	iss.logger.Warn("another program holds the HTTP port and does not answer SSLCI's check, which will fail; "+
		"stop it, or have it pass /.well-known/acme-challenge/ to a free port set as alt_http_port (the issuer answers there), or verify by DNS",
		zap.String("identifier", v.Domain), zap.Int("port", port),
		zap.Int("status", resp.StatusCode), zap.String("server", resp.Header.Get("Server")))
}

func (s *httpSolver) release(addr string) {
	fallbackMu.Lock()
	defer fallbackMu.Unlock()
	fs := fallbackServers[addr]
	if fs == nil {
		return
	}
	if fs.users--; fs.users == 0 {
		delete(fallbackServers, addr)
		_ = fs.srv.Close()
	}
}

// serveChallenge answers a GET of the exact challenge path for the exact
// host, as Caddy's own servers do; anything else is a 404.
func (iss *Issuer) serveChallenge(w http.ResponseWriter, r *http.Request) {
	if certmagic.LooksLikeHTTPChallenge(r) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if chal, err := iss.ledger.LoadChallenge(r.Context(), host); err == nil && certmagic.SolveHTTPChallenge(iss.logger, w, r, chal) {
			return
		}
	}
	http.NotFound(w, r)
}

// getChallenge fetches rawURL as SSLCI's check would (its host in the Host
// header, no redirect followed, no connection kept), connecting to addr.
// The body is capped; the response's body is closed.
func getChallenge(ctx context.Context, addr, rawURL string) (*http.Response, []byte, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp, body, nil
}

// isKeyAuthorization says whether a challenge fetch got keyAuth back, as
// SSLCI needs.
func isKeyAuthorization(resp *http.Response, body []byte, keyAuth string) bool {
	return resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == keyAuth
}

// dnsSolver publishes SSLCI's TXT record with a DNS provider module and
// waits until DNS serves it.
type dnsSolver struct {
	dns    *dnsverify.Solver
	logger *zap.Logger
}

// loadDNSSolver loads the provider module of cfg (dns.providers.*) and sets
// up the solver as Caddy's ACME issuer does for its DNS challenge. The
// record is checked with cfg's resolvers, or else with defaultResolvers
// (the TLS app's), or else the zone's nameservers.
func loadDNSSolver(ctx caddy.Context, cfg *caddytls.DNSChallengeConfig, defaultResolvers []string, logger *zap.Logger) (*dnsSolver, error) {
	if cfg == nil || len(cfg.ProviderRaw) == 0 {
		return nil, errors.New("sslci: no DNS provider configured")
	}
	// LoadModule clears the raw JSON it loads; a copy keeps the issuer's
	// config as it was given.
	loaded := *cfg
	mod, err := ctx.LoadModule(&loaded, "ProviderRaw")
	if err != nil {
		return nil, fmt.Errorf("sslci: loading the DNS provider module: %w", err)
	}
	prov, ok := mod.(dnsverify.Provider)
	if !ok {
		return nil, fmt.Errorf("sslci: DNS provider module %T cannot append and delete records", mod)
	}
	override, err := caddy.NewReplacer().ReplaceOrErr(cfg.OverrideDomain, true, true)
	if err != nil {
		return nil, fmt.Errorf("sslci: expanding the DNS override domain %q: %w", cfg.OverrideDomain, err)
	}
	resolvers := cfg.Resolvers
	if len(resolvers) == 0 {
		resolvers = defaultResolvers
	}
	return &dnsSolver{
		dns: &dnsverify.Solver{
			Provider:           prov,
			TTL:                time.Duration(cfg.TTL),
			PropagationDelay:   time.Duration(cfg.PropagationDelay),
			PropagationTimeout: time.Duration(cfg.PropagationTimeout),
			Resolvers:          resolvers,
			OverrideDomain:     override,
			Logger:             logger.Named("dns"),
		},
		logger: logger,
	}, nil
}

func (s *dnsSolver) Present(ctx context.Context, v *api.Verification, _ *ledger.OrderRecord) (func(), error) {
	rec, err := s.dns.Present(ctx, v.RecordName, v.Content)
	if err != nil {
		return nil, err // it names the record; Issue names the identifier
	}
	return func() {
		if err := s.dns.CleanUp(ctx, rec); err != nil {
			s.logger.Error("deleting the verification TXT record", zap.String("name", rec.Name), zap.Error(err))
		}
	}, nil
}

// Interface guards
var (
	_ issuance.Solver = (*httpSolver)(nil)
	_ issuance.Solver = (*dnsSolver)(nil)
)
