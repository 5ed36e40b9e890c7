package sslci

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/internal/ledger"
)

// This file is the admin API module admin.api.sslci: POST /sslci/renew
// renews certificates now, through certmagic's own renewal (its lock,
// storage writes and events), then has the running Caddy serve the renewed
// one. `caddy sslci renew` (command_renew.go) is its client.

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the sslci routes of Caddy's admin endpoint.
type adminAPI struct {
	log *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sslci",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Provision sets up the module. An admin router is provisioned before the
// config's apps are, so the TLS app is looked up per request.
func (a *adminAPI) Provision(ctx caddy.Context) error {
	a.log = ctx.Logger(a) // as admin.api.pki: the context has no module of its own here
	return nil
}

// Routes returns the sslci admin routes.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: renewPath, Handler: caddy.AdminHandlerFunc(a.handleRenew)}}
}

const (
	renewPath           = "/sslci/renew"
	defaultRenewTimeout = 5 * time.Minute
	// serveTimeout bounds loading a renewed certificate into the cache,
	// which runs even when the request is gone: it is stored already.
	serveTimeout = time.Minute
)

// renewRequest is the body of POST /sslci/renew.
type renewRequest struct {
	Names []string `json:"names"`
	// Renew even if not due.
	Force bool `json:"force,omitempty"`
	// Bound of the whole request, waiting for certmagic's lock included.
	// Default: 5m.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// renewResponse answers it, 200 when every name was renewed or not due,
// 502 when a renewal failed.
type renewResponse struct {
	Results []renewResult `json:"results"`
	Error   string        `json:"error,omitempty"`
}

// renewResult is one name's. Serial and NotAfter are those of the
// certificate served afterwards: the renewed one, or the one kept.
type renewResult struct {
	Name     string    `json:"name"`
	Renewed  bool      `json:"renewed"`
	Serial   string    `json:"serial,omitempty"` // hex, upper case
	NotAfter time.Time `json:"not_after,omitzero"`
	// Not due: when the certificate enters certmagic's renewal window.
	RenewsAfter time.Time `json:"renews_after,omitzero"`
	Error       string    `json:"error,omitempty"`
}

func (a *adminAPI) handleRenew(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("sslci: %s %s: use POST", r.Method, renewPath)}
	}
	// Read to its end, so that the server notices when the client goes
	// and cancels r.Context().
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return badRequest("sslci: reading the request: %v", err)
	}
	var req renewRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return badRequest("sslci: reading the request: %v", err)
	}
	if len(req.Names) == 0 {
		return badRequest("sslci: no names to renew")
	}
	if req.Timeout < 0 {
		return badRequest("sslci: timeout %s is negative", time.Duration(req.Timeout))
	}
	timeout := cmp.Or(time.Duration(req.Timeout), defaultRenewTimeout)

	// Every name is checked before any is renewed.
	var targets []renewTarget
	for _, name := range req.Names {
		name = ledger.NormalName(strings.TrimSpace(name))
		if name == "" {
			return badRequest("sslci: an empty name")
		}
		if slices.ContainsFunc(targets, func(t renewTarget) bool { return t.name == name }) {
			continue
		}
		t, err := findRenewTarget(name)
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}

	// The client's disconnect cancels what is not done (see renew).
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	var resp renewResponse
	var failed []string
	for _, t := range targets {
		res := t.renew(ctx, req.Force, timeout)
		if res.Error != "" {
			failed = append(failed, t.name)
			a.log.Error("renewal asked through the admin API failed", zap.String("identifier", t.name), zap.String("error", res.Error))
		}
		resp.Results = append(resp.Results, res)
	}
	status := http.StatusOK
	if len(failed) > 0 {
		status = http.StatusBadGateway
		resp.Error = fmt.Sprintf("sslci: renewing %s failed", strings.Join(failed, ", "))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(resp)
}

func badRequest(format string, args ...any) error {
	return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf(format, args...)}
}

func notManaged(format string, args ...any) error {
	return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf(format, args...)}
}

// renewTarget is a name a running sslci issuer manages.
type renewTarget struct {
	name   string
	cfg    *certmagic.Config     // its automation policy's
	served certmagic.Certificate // the certificate served for it now
}

// findRenewTarget finds the automation policy Caddy uses for name (the
// first whose subjects match it, or that has none, as caddytls chooses),
// its sslci issuer, and the certificate this Caddy serves for exactly
// that name.
func findRenewTarget(name string) (renewTarget, error) {
	app, err := caddy.ActiveContext().AppIfConfigured("tls")
	if err != nil {
		return renewTarget{}, notManaged("sslci: %s is not managed by an sslci issuer: this Caddy runs no TLS app", name)
	}
	var policy *caddytls.AutomationPolicy
	if auto := app.(*caddytls.TLS).Automation; auto != nil {
		i := slices.IndexFunc(auto.Policies, func(ap *caddytls.AutomationPolicy) bool {
			s := ap.Subjects()
			return len(s) == 0 || slices.ContainsFunc(s, func(subject string) bool { return certmagic.MatchWildcard(name, subject) })
		})
		if i >= 0 {
			policy = auto.Policies[i]
		}
	}
	if policy == nil {
		return renewTarget{}, notManaged("sslci: %s is not managed by an sslci issuer: no automation policy covers it (Caddy's default issuers would)", name)
	}
	var iss *Issuer
	var others []string
	for _, i := range policy.Issuers {
		if s, ok := i.(*Issuer); ok && iss == nil {
			iss = s
		} else if m, ok := i.(caddy.Module); ok {
			others = append(others, m.CaddyModule().ID.Name())
		}
	}
	if iss == nil {
		return renewTarget{}, notManaged("sslci: %s is not managed by an sslci issuer: its automation policy's issuers are %s", name, cmp.Or(strings.Join(slices.Compact(others), ", "), "others"))
	}
	cfg := iss.magic.Load()
	if cfg == nil {
		return renewTarget{}, caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("sslci: the sslci issuer for %s has no certmagic config yet", name)}
	}
	var exact, other []certmagic.Certificate
	for _, c := range caddytls.AllMatchingCertificates(name) {
		if c.Leaf == nil {
			continue // not a certificate for handshakes (certmagic's TLS-ALPN ones)
		}
		if slices.Contains(c.Names, name) {
			exact = append(exact, c)
		} else {
			other = append(other, c)
		}
	}
	if len(exact) == 0 {
		hint := ""
		if len(other) > 0 {
			hint = fmt.Sprintf(" (it is served by the certificate for %s: renew that name)", strings.Join(other[0].Names, ", "))
		}
		return renewTarget{}, notManaged("sslci: %s is not managed by an sslci issuer: this Caddy has no certificate for it%s", name, hint)
	}
	// Handshakes are served the first one valid (certmagic's
	// DefaultCertificateSelector); after a renewal here there is one.
	served := exact[0]
	if i := slices.IndexFunc(exact, func(c certmagic.Certificate) bool { return !c.Expired() }); i >= 0 {
		served = exact[i]
	}
	return renewTarget{name: name, cfg: cfg, served: served}, nil
}

// renew renews t's certificate if due, or forced, with certmagic's
// RenewCertSync: it takes the name's issue lock (waiting for a renewal
// under way), calls the policy's issuers, stores and emits certmagic's
// events; then the renewed certificate is served. ctx ends with the
// request: a client gone cancels the wait for the lock or the issuance
// (the issuer cancels its order at SSLCI, certmagic stores nothing and
// releases the lock), and the certificate served stays as it was. Once
// certmagic has stored a renewal, loading it into the cache is done
// whatever ctx says, so that what is stored is what is served.
func (t renewTarget) renew(ctx context.Context, force bool, timeout time.Duration) renewResult {
	before := t.served.Leaf
	res := renewResult{Name: t.name, Serial: serialOf(before), NotAfter: before.NotAfter}
	if !force && !t.served.NeedsRenewal(t.cfg) {
		res.RenewsAfter = ledger.NewLeaf("", before).RenewAt(t.cfg.RenewalWindowRatio)
		return res
	}
	if err := t.cfg.RenewCertSync(ctx, t.name, force); err != nil {
		// certmagic's "[name] Renew: " around the issuer's error says nothing more
		if inner := errors.Unwrap(err); inner != nil && strings.HasPrefix(err.Error(), "["+t.name+"] Renew: ") {
			err = inner
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("not done within %s (the timeout): %w", timeout, err)
		}
		res.Error = err.Error()
		return res
	}
	serveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serveTimeout)
	defer cancel()
	cert, err := serveStored(serveCtx, t.cfg, t.name)
	if err != nil {
		res.Error = "renewed and stored, but not served yet (certmagic serves it once due): " + err.Error()
		return res
	}
	res.Serial, res.NotAfter = serialOf(cert.Leaf), cert.Leaf.NotAfter
	res.Renewed = !cert.Leaf.Equal(before)
	return res
}

// serveStored has Caddy serve the certificate stored for name in place
// of those it supersedes (the same names, not newer), as certmagic's
// maintenance does after a renewal with reloadManagedCertificate. That is
// unexported; CacheManagedCertificate only adds the certificate beside
// the old one, which handshakes keep choosing (the first valid one), so
// the superseded ones are then removed from the cache.
func serveStored(ctx context.Context, cfg *certmagic.Config, name string) (certmagic.Certificate, error) {
	cert, err := cfg.CacheManagedCertificate(ctx, name)
	if err != nil {
		return cert, err
	}
	cache, err := cacheOf(cfg)
	if err != nil {
		return cert, err
	}
	names := slices.Sorted(slices.Values(cert.Names))
	var old []string
	for _, c := range cache.AllMatchingCertificates(name) {
		if c.Leaf != nil && c.Hash() != cert.Hash() && slices.Equal(slices.Sorted(slices.Values(c.Names)), names) && !c.Leaf.NotBefore.After(cert.Leaf.NotBefore) {
			old = append(old, c.Hash())
		}
	}
	cache.Remove(old)
	return cert, nil
}

// cacheOf is the certificate cache cfg serves from. certmagic (v0.25.6)
// exports the cache's Remove but not the config's pointer to its cache:
// it is read from the unexported field, checked by name and type, so that
// another certmagic is an error here, never a wrong read.
func cacheOf(cfg *certmagic.Config) (*certmagic.Cache, error) {
	f := reflect.ValueOf(cfg).Elem().FieldByName("certCache")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*certmagic.Cache]() {
		return nil, errors.New("this certmagic's Config has no certCache field")
	}
	cache := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().(*certmagic.Cache)
	if cache == nil {
		return nil, errors.New("the certmagic config has no cache")
	}
	return cache, nil
}

// serialOf is leaf's serial in hex, as openssl x509 -serial prints it.
func serialOf(leaf *x509.Certificate) string { return fmt.Sprintf("%X", leaf.SerialNumber) }

// Interface guards
var (
	_ caddy.Module      = (*adminAPI)(nil)
	_ caddy.Provisioner = (*adminAPI)(nil)
	_ caddy.AdminRouter = (*adminAPI)(nil)
)
