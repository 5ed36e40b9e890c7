package sslci

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/issuance"
	"github.com/sslci/caddy-sslci/internal/ledger"
)

// This file is `caddy sslci check`: a preflight of SSLCI's verification of
// each name, with the issuer's own means (its challenge in storage, its DNS
// provider), that spends no order at SSLCI.

func checkCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check NAME...",
		Short: "Checks that SSLCI's verification of each name would reach this Caddy",
		Long: `
Checks each name as SSLCI would verify it, with the method of the issuer
Caddy uses for the name, without asking SSLCI for anything.

http: puts a probe challenge in Caddy's storage, exactly where the issuer
puts SSLCI's, and fetches http://NAME/.well-known/acme-challenge/<probe> from
NAME's address, on port 80 (or the config's http_port, or the issuer's
alt_http_port), as SSLCI would. It says whether the answer came from this
Caddy (the probe's key authorization) and, if not, what answered. --via
dials another address (split DNS, a test on loopback); the request still
names NAME.

dns: publishes a probe TXT record at _acme-challenge.NAME through the
issuer's DNS provider and waits, as the issuer does, until the resolvers
serve it.

The probe is removed afterwards. The exit status is 1 if a check fails.`,
		Args: cobra.MinimumNArgs(1),
		RunE: run(cmdCheck),
	}
	cmd.Flags().String("via", "", "For http: dial this address (host, or host:port) instead of NAME's")
	cmd.Flags().Duration("timeout", 10*time.Second, "For http: how long to wait for the answer")
	return cmd
}

// checkResult is one name's check.
type checkResult struct {
	Name    string `json:"name"`
	Method  string `json:"method"`
	OK      bool   `json:"ok"`
	Result  string `json:"result"` // what happened, in a few words
	URL     string `json:"url,omitempty"`
	Address string `json:"address,omitempty"` // the address dialled
	Status  int    `json:"status,omitempty"`
	Server  string `json:"server,omitempty"` // the answer's Server header
	Excerpt string `json:"excerpt,omitempty"`
	Record  string `json:"record,omitempty"` // the probe TXT record
	Zone    string `json:"zone,omitempty"`
	Error   string `json:"error,omitempty"`
}

func cmdCheck(out io.Writer, fl caddycmd.Flags) (int, error) {
	env, err := loadTargets(fl)
	if err != nil {
		return exitFailed, err
	}
	timeout := fl.Duration("timeout")
	if timeout <= 0 {
		return exitFailed, fmt.Errorf("sslci: --timeout %s is not a positive duration", fl.String("timeout"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var results []checkResult
	failed := 0
	for _, name := range fl.Args() {
		name = ledger.NormalName(name)
		r := checkResult{Name: name}
		t, err := env.forName(name)
		if err == nil {
			r.Method = t.iss.Method
			err = issuance.CheckName(name, t.iss.Method)
		}
		switch {
		case err != nil:
			r.Result, r.Error = "cannot be checked", strings.TrimPrefix(err.Error(), name+": ")
		case t.iss.Method == api.MethodDNS:
			t.checkDNS(ctx, &r)
		default:
			t.checkHTTP(ctx, &r, fl.String("via"), timeout)
		}
		if !r.OK {
			failed++
		}
		results = append(results, r)
	}
	if fl.Bool("json") {
		if err := writeJSON(out, map[string]any{"checks": results}); err != nil {
			return exitFailed, err
		}
	} else {
		printChecks(out, results)
	}
	if failed > 0 {
		return exitFailed, fmt.Errorf("sslci: check: %d of %d names failed", failed, len(results))
	}
	return 0, nil
}

func printChecks(out io.Writer, results []checkResult) {
	var rows [][]string
	for _, r := range results {
		status := "ok"
		if !r.OK {
			status = "FAIL"
		}
		detail := r.Result
		if r.Error != "" {
			detail += ": " + r.Error
		}
		switch {
		case r.URL != "":
			detail += fmt.Sprintf(" (GET %s, dialled %s)", r.URL, r.Address)
		case r.Zone != "":
			detail += fmt.Sprintf(" (TXT %s in zone %s)", r.Record, r.Zone)
		}
		rows = append(rows, []string{status, r.Name, r.Method, detail})
	}
	table(out, []string{"CHECK", "NAME", "METHOD", "RESULT"}, rows)
}

// checkHTTP stores a probe challenge as the issuer stores SSLCI's, fetches
// it as SSLCI would, and removes it. The challenge's storage key is per
// name. certmagic holds a name's issuance lock through all its retries
// (for days, when issuance keeps failing: just when a check is wanted), so
// the check does not wait for it: it takes it only if it is free, which
// keeps an issuance from storing its challenge while the probe is in
// place. Either way it never replaces a challenge in storage, or one it
// cannot tell is absent (a read that fails), and removes only its own
// probe.
func (t *target) checkHTTP(ctx context.Context, r *checkResult, via string, timeout time.Duration) {
	key := t.iss.ledger.Keys.Challenge(r.Name)
	if unlock, ok := ledger.TryLock(ctx, t.storage, ledger.IssueLock(r.Name)); ok {
		defer unlock()
	}
	switch _, err := t.storage.Stat(ctx, key); {
	case err == nil:
		r.Result, r.Error = "not checked", "a verification of this name is in progress (its challenge is in storage); try again in a minute"
		return
	case !errors.Is(err, fs.ErrNotExist):
		r.Result, r.Error = "not checked", "reading storage, to see whether a verification of this name is in progress: "+err.Error()
		return
	}
	token, secret := randomText(), randomText()
	v := &api.Verification{Domain: r.Name, Method: api.MethodHTTP, Token: token, Content: token + "." + secret, FilePath: challengeBasePath + token}
	if _, err := t.iss.ledger.StoreChallenge(ctx, v, nil); err != nil { // the issuer's ledger is on t.storage
		r.Result, r.Error = "not checked", err.Error()
		return
	}
	defer func() {
		if !t.probeInStorage(ctx, r.Name, token) {
			return // an issuance's challenge replaced it: leave that alone
		}
		if err := t.storage.Delete(context.WithoutCancel(ctx), key); err != nil {
			r.OK, r.Error = false, "removing the probe from storage: "+err.Error()
		}
	}()

	host, port := r.Name, strconv.Itoa(t.httpPort)
	if via != "" {
		host = via
		if h, p, err := net.SplitHostPort(via); err == nil {
			host, port = h, p
		}
	}
	r.Address = net.JoinHostPort(host, port)
	r.URL = "http://" + r.Name + v.FilePath
	fetch(ctx, r, timeout, v.Content)
	if !t.probeInStorage(ctx, r.Name, token) {
		r.OK, r.Result, r.Error = false, "not checked", "an issuance of this name stored its challenge meanwhile; try again in a minute"
	}
}

// probeInStorage says whether the challenge in storage for the name is
// still the probe with token.
func (t *target) probeInStorage(ctx context.Context, name, token string) bool {
	chal, err := t.iss.ledger.LoadChallenge(context.WithoutCancel(ctx), name) // the issuer's ledger is on t.storage
	return err == nil && chal.Token == token
}

// fetch GETs r.URL from r.Address, as SSLCI's check does (no redirect
// followed), and says whether the body is the probe's key authorization.
func fetch(ctx context.Context, r *checkResult, timeout time.Duration, keyAuth string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, body, err := getChallenge(ctx, r.Address, r.URL)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // the URL is shown already
		}
		r.Result, r.Error = "nothing answered", err.Error()
		if errors.Is(err, syscall.ECONNREFUSED) {
			r.Error += "; is Caddy running? (without an HTTP server in its config, the issuer listens only while verifying)"
		}
		return
	}
	r.Status, r.Server = resp.StatusCode, resp.Header.Get("Server")
	if isKeyAuthorization(resp, body, keyAuth) {
		r.OK, r.Result = true, "reached this Caddy"
		return
	}
	r.Excerpt = excerptOf(body)
	r.Result = "something else answered: " + resp.Status
	if r.Server != "" {
		r.Result += ", Server: " + excerptOf([]byte(r.Server))
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		r.Result += ", redirecting to " + excerptOf([]byte(loc)) + " (SSLCI follows no redirect)"
	}
	if r.Excerpt != "" {
		r.Result += ", body " + r.Excerpt
	}
}

// excerptOf quotes the start of what another server sent, escaped so that
// it cannot forge terminal output.
func excerptOf(b []byte) string {
	const n = 80
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	if len(s) > n {
		return strconv.Quote(s[:n]) + "..."
	}
	return strconv.Quote(s)
}

// checkDNS publishes a probe TXT record through the issuer's DNS provider
// and waits, as the issuer does, until DNS serves it; then deletes it.
func (t *target) checkDNS(ctx context.Context, r *checkResult) {
	solver, ok := t.iss.engine.Solver.(*dnsSolver)
	if !ok {
		r.Result, r.Error = "not checked", "the issuer has no DNS provider"
		return
	}
	r.Record = "_acme-challenge." + strings.TrimPrefix(r.Name, "*.")
	if solver.dns.OverrideDomain != "" {
		r.Record = solver.dns.OverrideDomain
	}
	start := time.Now()
	rec, err := solver.dns.Present(ctx, r.Record, "sslci-check-"+randomText())
	if err != nil {
		r.Result, r.Error = "publishing or seeing the probe TXT record failed", err.Error()
		return
	}
	r.Record, r.Zone = rec.Name, rec.Zone
	switch {
	case solver.dns.PropagationTimeout < 0:
		r.Result = "published; its visibility not checked (propagation_timeout -1)"
	case len(solver.dns.Resolvers) > 0:
		r.Result = fmt.Sprintf("the resolvers %s serve the probe TXT record after %s", strings.Join(solver.dns.Resolvers, ", "), time.Since(start).Round(time.Millisecond))
	default:
		r.Result = fmt.Sprintf("the zone's nameservers serve the probe TXT record after %s", time.Since(start).Round(time.Millisecond))
	}
	r.OK = true
	if err := solver.dns.CleanUp(ctx, rec); err != nil {
		r.OK, r.Error = false, "removing the probe: "+err.Error()
	}
}

func randomText() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
