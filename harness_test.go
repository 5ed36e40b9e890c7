package sslci_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
	"github.com/spf13/cobra"

	sslci "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/testdns"
	"github.com/sslci/caddy-sslci/internal/testport"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// userEnv is the environment the tests started with, before TestMain
// gave Caddy folders of its own: the go command needs the user's (its
// build and module caches are there).
var userEnv = os.Environ()

func TestMain(m *testing.M) {
	// Caddy keeps its instance id and autosaved config under the user's
	// folders: give it folders of its own.
	home, err := os.MkdirTemp("", "sslci-test-home-")
	if err != nil {
		panic(err)
	}
	os.Setenv("HOME", home)
	os.Setenv("XDG_DATA_HOME", filepath.Join(home, "data"))
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	code := m.Run()
	os.RemoveAll(home)
	os.Exit(code)
}

// testEnv is one simulator and the ports and storage of one in-process
// Caddy, all on loopback. Caddy is a process-wide singleton, so tests that
// start it do not run in parallel.
type testEnv struct {
	t                              testing.TB
	sim                            *sslcitest.Server
	httpPort, httpsPort, adminPort int
	storageDir                     string
	rootFile                       string // the simulator's root, PEM: the issuer's trusted_roots
	logFile                        string // set by newLog: Caddy logs there, as JSON
}

func newEnv(t testing.TB, opts sslcitest.Options) *testEnv {
	t.Helper()
	e := &testEnv{t: t, httpPort: testport.Get(t), httpsPort: testport.Get(t), adminPort: testport.Get(t), storageDir: t.TempDir()}
	opts.HTTPChallengeAddr = fmt.Sprintf("127.0.0.1:%d", e.httpPort)
	sim, err := sslcitest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	e.sim = sim
	e.rootFile = filepath.Join(t.TempDir(), "sslci-sim-root.pem")
	if err := os.WriteFile(e.rootFile, sim.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSLCI_TEST_TOKEN", sim.Token())
	return e
}

// newDNSEnv is a testEnv whose simulator checks TXT records with real DNS
// queries to a loopback authoritative server for zone.
func newDNSEnv(t testing.TB, zone string) (*testEnv, *testdns.Server) {
	t.Helper()
	dnsSrv, err := testdns.Start(zone)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dnsSrv.Close)
	return newEnv(t, sslcitest.Options{DNSServer: dnsSrv.Addr()}), dnsSrv
}

func dnsFields(dnsSrv *testdns.Server, timeout string) map[string]any {
	return map[string]any{"dns": map[string]any{
		"provider":            map[string]any{"name": "testdns", "server": dnsSrv.Addr()},
		"resolvers":           []string{dnsSrv.Addr()},
		"propagation_timeout": timeout,
	}}
}

// globalOptions is the Caddyfile global block every test uses: loopback
// only, its own ports and storage, nothing persisted.
func (e *testEnv) globalOptions(extra string) string {
	if extra != "" {
		extra = "\n\t" + extra
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	storage file_system %s%s
}
`, e.adminPort, e.httpPort, e.httpsPort, e.storageDir, extra)
}

// issuerBlock is the `issuer sslci` directive for the simulator, whose
// root it trusts.
func (e *testEnv) issuerBlock(extra string) string {
	if extra != "" {
		extra = "\n\t\t\t" + extra
	}
	return fmt.Sprintf("issuer sslci {env.SSLCI_TEST_TOKEN} {\n\t\t\tendpoint %s\n\t\t\ttrusted_roots %s%s\n\t\t}", e.sim.URL(), e.rootFile, extra)
}

// siteConfig is the JSON of a Caddyfile with the global options plus extra,
// and one site, answering "hello from {host}", whose certificate comes from
// the simulator through an issuer block with issuerExtra.
func (e *testEnv) siteConfig(globalExtra, site, issuerExtra string) []byte {
	e.t.Helper()
	return adapt(e.t, e.globalOptions(globalExtra)+fmt.Sprintf(`
%s {
	tls {
		%s
	}
	respond "hello from {host}"
}
`, site, e.issuerBlock(issuerExtra)))
}

// adapt turns a Caddyfile into JSON.
func adapt(t testing.TB, caddyfile string) []byte {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		t.Logf("caddyfile warning: %s", w.String())
	}
	return cfg
}

// startCaddy runs Caddy with cfg (JSON) until the test ends, or stopCaddy.
func (e *testEnv) startCaddy(cfg []byte) {
	e.t.Helper()
	if err := caddy.Load(cfg, true); err != nil {
		e.t.Fatalf("loading config: %v", err)
	}
	e.t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			e.t.Errorf("stopping Caddy: %v", err)
		}
	})
}

// stopCaddy stops the running Caddy.
func (e *testEnv) stopCaddy() {
	e.t.Helper()
	if err := caddy.Stop(); err != nil {
		e.t.Fatalf("stopping Caddy: %v", err)
	}
}

// setJSON is the JSON config cfg with its top-level key set to value.
func setJSON(t testing.TB, cfg []byte, key string, value any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(cfg, &m); err != nil {
		t.Fatal(err)
	}
	m[key] = value
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// withStorage is the JSON config cfg with another storage.
func (e *testEnv) withStorage(cfg []byte, storage map[string]any) []byte {
	e.t.Helper()
	return setJSON(e.t, cfg, "storage", storage)
}

// activeIssuers returns the provisioned sslci issuers of the running config.
func activeIssuers(t testing.TB) []*sslci.Issuer {
	t.Helper()
	app, err := caddy.ActiveContext().App("tls")
	if err != nil {
		t.Fatal(err)
	}
	var out []*sslci.Issuer
	for _, p := range app.(*caddytls.TLS).Automation.Policies {
		for _, iss := range p.Issuers {
			if s, ok := iss.(*sslci.Issuer); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// Caddy's log: the configs withLog makes (and startIssuer's, once newLog
// was called) have Caddy log to e's log file, as JSON; logLines, logHas,
// waitForLogLine and issueCalls read it.

// newLog gives e a new log file, for the Caddys configured from now on.
func (e *testEnv) newLog() {
	e.logFile = filepath.Join(e.t.TempDir(), "caddy.log")
}

// logging is the logging config of a Caddy that logs to e's log file
// (newLog's, made now if e has none yet).
func (e *testEnv) logging() map[string]any {
	if e.logFile == "" {
		e.newLog()
	}
	return map[string]any{"logs": map[string]any{"default": map[string]any{
		"writer":  map[string]any{"output": "file", "filename": e.logFile},
		"encoder": map[string]any{"format": "json"},
	}}}
}

// withLog is the JSON config cfg logging to e's log file.
func (e *testEnv) withLog(cfg []byte) []byte {
	e.t.Helper()
	return setJSON(e.t, cfg, "logging", e.logging())
}

// logLines returns the lines Caddy logged with message msg (all: ""),
// leaving out a last line not yet complete.
func (e *testEnv) logLines(msg string) []map[string]any {
	e.t.Helper()
	data, err := os.ReadFile(e.logFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var out []map[string]any
	for _, text := range lines[:len(lines)-1] {
		var line map[string]any
		if err := json.Unmarshal([]byte(text), &line); err != nil {
			e.t.Fatalf("log line %q: %v", text, err)
		}
		if msg == "" || line["msg"] == msg {
			out = append(out, line)
		}
	}
	return out
}

// logLinesWith returns the lines of Caddy's log with s in them, as logged,
// for a failure's message.
func (e *testEnv) logLinesWith(s string) []string {
	data, _ := os.ReadFile(e.logFile)
	var out []string
	for line := range strings.Lines(string(data)) {
		if strings.Contains(line, s) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	if len(out) == 0 {
		return []string{fmt.Sprintf("(none in %d bytes of log: %q)", len(data), data[max(0, len(data)-3000):])}
	}
	return out
}

// logHas reports whether s is in Caddy's log.
func (e *testEnv) logHas(s string) bool {
	data, _ := os.ReadFile(e.logFile)
	return bytes.Contains(data, []byte(s))
}

// waitForLogLine polls Caddy's log for a line with message msg and
// returns the first.
func (e *testEnv) waitForLogLine(msg string, limit time.Duration) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if lines := e.logLines(msg); len(lines) > 0 {
			return lines[0]
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no log line %q within %s; log: %v", msg, limit, e.logLines(""))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// issueCalls counts in Caddy's log the Issue calls certmagic made for
// name (its "obtaining certificate" line, one per attempt) and those that
// failed ("could not get certificate from issuer").
func (e *testEnv) issueCalls(name string) (calls, failed int) {
	e.t.Helper()
	for _, line := range e.logLines("") {
		if line["identifier"] != name {
			continue
		}
		switch line["msg"] {
		case "obtaining certificate":
			calls++
		case "could not get certificate from issuer":
			failed++
		}
	}
	return calls, failed
}

func (e *testEnv) postLoad(cfg []byte) {
	e.t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/load", e.adminPort), "application/json", bytes.NewReader(cfg))
	if err != nil {
		e.t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		e.t.Fatalf("POST /load: %s: %s", resp.Status, buf.String())
	}
}

// startIssuer runs a Caddy with only the TLS app (nothing listens on the
// HTTP port, so the issuer answers the check itself) and returns the
// provisioned issuer of its one automation policy, trusting the
// simulator's root. fields are extra JSON fields of the issuer.
func (e *testEnv) startIssuer(fields map[string]any) *sslci.Issuer {
	e.t.Helper()
	issuer := map[string]any{
		"module":                  "sslci",
		"token":                   "{env.SSLCI_TEST_TOKEN}",
		"endpoint":                e.sim.URL(),
		"trusted_roots_pem_files": []string{e.rootFile},
		"listen_host":             "127.0.0.1",
		"alternate_http_port":     e.httpPort,
	}
	for k, v := range fields {
		issuer[k] = v
	}
	config := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": e.storageDir},
		"apps": map[string]any{"tls": map[string]any{"automation": map[string]any{
			"policies": []any{map[string]any{"issuers": []any{issuer}}},
		}}},
	}
	if e.logFile != "" {
		config["logging"] = e.logging()
	}
	cfg, err := json.Marshal(config)
	if err != nil {
		e.t.Fatal(err)
	}
	e.startCaddy(cfg)
	return activeIssuers(e.t)[0]
}

// restartIssuer stops the running Caddy and starts one with another issuer
// config on the same storage and simulator.
func (e *testEnv) restartIssuer(fields map[string]any) *sslci.Issuer {
	e.t.Helper()
	e.stopCaddy()
	return e.startIssuer(fields)
}

// handshake connects to Caddy's HTTPS port with SNI name and verifies the
// served chain against the simulator's root, as a browser would.
func (e *testEnv) handshake(name string) (*x509.Certificate, error) {
	d := tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: e.sim.RootPool()}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", e.httpsPort))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// waitForCertificate polls until Caddy serves a verifying certificate for
// name whose serial differs from notSerial (nil: any).
func (e *testEnv) waitForCertificate(name string, notSerial []byte, limit time.Duration) *x509.Certificate {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	var lastErr error
	for time.Now().Before(deadline) {
		leaf, err := e.handshake(name)
		if err == nil && !bytes.Equal(leaf.SerialNumber.Bytes(), notSerial) {
			return leaf
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("no (new) certificate served for %s within %s; last error: %v; simulator log: %+v", name, limit, lastErr, e.sim.Requests())
	return nil
}

// get fetches https://name/path from Caddy, verifying against the
// simulator's root.
func (e *testEnv) get(name, path string) (int, string) {
	e.t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.sim.RootPool()},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", e.httpsPort))
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + name + path)
	if err != nil {
		e.t.Fatalf("GET https://%s%s: %v", name, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// parseChain checks an issued PEM chain against the simulator's root for
// every name and returns the leaf.
func (e *testEnv) parseChain(chainPEM []byte, names ...string) *x509.Certificate {
	e.t.Helper()
	var certs []*x509.Certificate
	for rest := chainPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			e.t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) < 2 {
		e.t.Fatalf("chain has %d certificates, want the leaf and its issuer", len(certs))
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	for _, name := range names {
		if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: e.sim.RootPool(), Intermediates: inter}); err != nil {
			e.t.Errorf("verifying the chain for %s: %v", name, err)
		}
	}
	got := slices.Clone(certs[0].DNSNames)
	slices.Sort(got)
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		e.t.Errorf("certificate names = %v, want exactly %v", got, want)
	}
	return certs[0]
}

// probeChallenge waits for the challenge of name to be in storage, then
// checks what Caddy's HTTP port answers to the right and the wrong requests.
func (e *testEnv) probeChallenge(name string) {
	e.t.Helper()
	file := filepath.Join(e.storageDir, "acme", certmagic.StorageKeys.Safe(e.issuerKey()), "challenge_tokens", name+".json")
	var chal acme.Challenge
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, err := os.ReadFile(file)
		if err == nil && json.Unmarshal(data, &chal) == nil {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no challenge in storage at %s", file)
		}
		time.Sleep(50 * time.Millisecond)
	}
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	probe := func(method, host, path string) (int, string) {
		req, _ := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", e.httpPort, path), nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			e.t.Fatalf("%s %s%s: %v", method, host, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	right := "/.well-known/acme-challenge/" + chal.Token
	if status, body := probe(http.MethodGet, name, right); status != 200 || body != chal.KeyAuthorization {
		e.t.Errorf("GET %s%s = %d %q, want the key authorization", name, right, status, body)
	}
	for _, p := range []struct{ method, host, path string }{
		{http.MethodGet, "other.test", right},
		{http.MethodPost, name, right},
		{http.MethodGet, name, right + "x"},
		{http.MethodGet, name, "/.well-known/acme-challenge/"},
	} {
		if _, body := probe(p.method, p.host, p.path); strings.Contains(body, chal.KeyAuthorization) {
			e.t.Errorf("%s %s%s was answered with the key authorization", p.method, p.host, p.path)
		}
	}
}

// counts returns the simulator's request counts by operation.
func (e *testEnv) counts() map[sslcitest.Op]int {
	out := map[sslcitest.Op]int{}
	for _, r := range e.sim.Requests() {
		out[r.Op]++
	}
	return out
}

func (e *testEnv) wantCounts(want map[sslcitest.Op]int) {
	e.t.Helper()
	got := e.counts()
	for op, n := range want {
		if got[op] != n {
			e.t.Errorf("simulator saw %d %q requests, want %d (all: %v)", got[op], op, n, got)
		}
	}
	total := 0
	for _, n := range want {
		total += n
	}
	if all := len(e.sim.Requests()); all != total {
		e.t.Errorf("simulator saw %d requests in all, want %d (%v)", all, total, got)
	}
}

// checkNothingLeft fails t if an order is still pending at the simulator
// or a challenge is still in storage: what every issuance, failed or not,
// must leave behind.
func (e *testEnv) checkNothingLeft(t testing.TB) {
	t.Helper()
	if left := e.sim.PendingOrders(e.sim.Token()); len(left) != 0 {
		t.Errorf("orders left pending: %+v", left)
	}
	if files := filesUnder(e.storageDir, "acme"); len(files) != 0 {
		t.Errorf("challenge data left in storage: %v", files)
	}
}

// storedMetadata reads what the issuer stored with the certificate for name.
func (e *testEnv) storedMetadata(name string) map[string]any {
	e.t.Helper()
	fs := &certmagic.FileStorage{Path: e.storageDir}
	data, err := fs.Load(context.Background(), certmagic.StorageKeys.SiteMeta(e.issuerKey(), name))
	if err != nil {
		e.t.Fatalf("reading certificate metadata: %v", err)
	}
	var meta struct {
		IssuerData map[string]any `json:"issuer_data"`
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		e.t.Fatal(err)
	}
	return meta.IssuerData
}

// storedKeyMatches reports whether the private key certmagic stored for
// name is the one for leaf.
func (e *testEnv) storedKeyMatches(name string, leaf *x509.Certificate) bool {
	e.t.Helper()
	fs := &certmagic.FileStorage{Path: e.storageDir}
	keyPEM, err := fs.Load(context.Background(), certmagic.StorageKeys.SitePrivateKey(e.issuerKey(), name))
	if err != nil {
		e.t.Fatalf("reading stored key: %v", err)
	}
	key, err := certmagic.PEMDecodePrivateKey(keyPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	return key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey)
}

func (e *testEnv) issuerKey() string {
	return (&sslci.Issuer{Endpoint: e.sim.URL()}).IssuerKey()
}

// forgetVerifications makes the next issuance verify every name again: the
// simulator forgets its verifications, and the issuer its records of them.
func (e *testEnv) forgetVerifications() {
	e.sim.ExpireVerifications()
	if err := os.RemoveAll(filepath.Join(e.storageDir, "sslci")); err != nil {
		e.t.Fatal(err)
	}
}

// keep stores what Issue returned where certmagic stores it for names
// (the sorted names joined by commas): the certificate, and the metadata
// that links it to its finalize record. For tests that call Issue
// directly. The ledger deletes at SSLCI a
// certificate Issue returned that storage does not hold.
func (e *testEnv) keep(cert *certmagic.IssuedCertificate, names ...string) {
	e.t.Helper()
	namesKey := strings.Join(slices.Sorted(slices.Values(names)), ",")
	issuerData, err := json.Marshal(cert.Metadata)
	if err != nil {
		e.t.Fatal(err)
	}
	meta, err := json.Marshal(certmagic.CertificateResource{SANs: names, IssuerData: issuerData})
	if err != nil {
		e.t.Fatal(err)
	}
	writeFile(e.t, e.storageDir, certmagic.StorageKeys.SiteCert(e.issuerKey(), namesKey), cert.Certificate)
	writeFile(e.t, e.storageDir, certmagic.StorageKeys.SiteMeta(e.issuerKey(), namesKey), meta)
}

// checkEndState fails t unless SSLCI holds no pending order of the
// account but those in others, and exactly the certificates Caddy stores
// for names (matched by names and end_time == the stored leaf's NotAfter)
// plus those in otherCerts.
func (e *testEnv) checkEndState(t testing.TB, names []string, otherOrders, otherCerts []int64) {
	t.Helper()
	for _, o := range e.sim.PendingOrders(e.sim.Token()) {
		if !slices.Contains(otherOrders, o.ID) {
			t.Errorf("order %d for %s left pending", o.ID, o.Domain)
		}
	}
	fs := &certmagic.FileStorage{Path: e.storageDir}
	want := map[string]bool{} // "name end_time" of stored leaves
	for _, name := range names {
		data, err := fs.Load(context.Background(), certmagic.StorageKeys.SiteCert(e.issuerKey(), name))
		if err != nil {
			t.Errorf("no certificate stored for %s: %v", name, err)
			continue
		}
		leaf := e.parseChain(data, name)
		want[fmt.Sprintf("%s %d", name, leaf.NotAfter.Unix())] = true
	}
	got := map[string]bool{}
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		if slices.Contains(otherCerts, c.ID) {
			continue
		}
		k := fmt.Sprintf("%s %d", strings.Join(c.Domains, ","), c.EndTime.Unix())
		if got[k] || !want[k] {
			t.Errorf("certificate %d (%s) at SSLCI is not one Caddy stores", c.ID, k)
		}
		got[k] = true
	}
	for k := range want {
		if !got[k] {
			t.Errorf("stored certificate %s is not at SSLCI", k)
		}
	}
}

// faultSeen reports whether the simulator applied kind to a request for op.
func (e *testEnv) faultSeen(op sslcitest.Op, kind sslcitest.Fault) bool {
	return slices.ContainsFunc(e.sim.Requests(), func(r sslcitest.Request) bool { return r.Op == op && r.Fault == kind })
}

// waitAll waits until Caddy serves a certificate for every name.
func (e *testEnv) waitAll(names []string, limit time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for _, name := range names {
		e.waitForCertificate(name, nil, time.Until(deadline))
	}
}

// keptKeyPath is where the README says the issuer keeps a key for leaf:
// in its site's folder, named by its public key and the leaf's expiry.
func (e *testEnv) keptKeyPath(leaf *x509.Certificate) string {
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	site := certmagic.StorageKeys.Safe(strings.Join(slices.Sorted(slices.Values(leaf.DNSNames)), ","))
	return path.Join("sslci", certmagic.StorageKeys.Safe(e.issuerKey()), "keys", site,
		fmt.Sprintf("%s-%d.pem", hex.EncodeToString(sum[:]), leaf.NotAfter.Unix()))
}

// storedPair reads the certificate and key stored in dir for name and
// reports whether Caddy could serve them (as certmagic checks them).
func (e *testEnv) storedPair(dir, name string) (certPEM, keyPEM []byte, err error) {
	fs := &certmagic.FileStorage{Path: dir}
	ctx := context.Background()
	if certPEM, err = fs.Load(ctx, certmagic.StorageKeys.SiteCert(e.issuerKey(), name)); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = fs.Load(ctx, certmagic.StorageKeys.SitePrivateKey(e.issuerKey(), name)); err != nil {
		return nil, nil, err
	}
	_, err = tls.X509KeyPair(certPEM, keyPEM)
	return certPEM, keyPEM, err
}

func foreignKeyPEM(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	out, err := certmagic.PEMEncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func leafOf(t testing.TB, chainPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(chainPEM)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func writeFile(t testing.TB, dir, key string, data []byte) {
	t.Helper()
	if err := (&certmagic.FileStorage{Path: dir}).Store(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
}

// filesUnder lists the storage keys under prefix in the file storage at dir.
func filesUnder(dir, prefix string) []string {
	var keys []string
	filepath.WalkDir(filepath.Join(dir, prefix), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			keys = append(keys, filepath.ToSlash(rel))
		}
		return nil
	})
	return keys
}

// runSSLCI runs `caddy sslci args...` through Caddy's command machinery, as
// the caddy binary does (the command registered with caddycmd, its cobra
// flags parsed), and returns what it printed and its error (a non-zero
// exit status). The token of the simulator must never be in the output.
func (e *testEnv) runSSLCI(args ...string) (string, error) {
	e.t.Helper()
	cmd, ok := caddycmd.Commands()["sslci"]
	if !ok {
		e.t.Fatal("no sslci command registered")
	}
	root := &cobra.Command{Use: "caddy", SilenceUsage: true, SilenceErrors: true}
	sub := &cobra.Command{Use: cmd.Name, Short: cmd.Short}
	cmd.CobraFunc(sub)
	root.AddCommand(sub)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"sslci"}, args...))
	err := root.Execute()
	for _, tok := range e.sim.Tokens() {
		if strings.Contains(out.String(), tok) || (err != nil && strings.Contains(err.Error(), tok)) {
			e.t.Errorf("sslci %v printed the token", args)
		}
	}
	return out.String(), err
}

// writeCaddyfile writes the Caddyfile of e's global options and one site
// per name, each with the sslci issuer, and returns its path.
func (e *testEnv) writeCaddyfile(issuerExtra string, names ...string) string {
	e.t.Helper()
	text := e.globalOptions("")
	for _, name := range names {
		text += fmt.Sprintf("\n%s {\n\ttls {\n\t\t%s\n\t}\n\trespond \"hello\"\n}\n", name, e.issuerBlock(issuerExtra))
	}
	path := filepath.Join(e.t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// foreignCertificate makes a certificate for name in the account through
// the API, as another client would: its challenge served by a server of
// its own, never by this Caddy.
func (e *testEnv) foreignCertificate(name string) {
	e.t.Helper()
	client, err := api.New(e.sim.URL(), e.sim.Token())
	if err != nil {
		e.t.Fatal(err)
	}
	ctx := context.Background()
	v, err := client.RequestVerification(ctx, name, api.MethodHTTP)
	if err != nil {
		e.t.Fatal(err)
	}
	srv := serveHTTP(e.t, "127.0.0.1:0", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, v.Content) })
	e.sim.SetHTTPChallengeAddr(srv)
	defer e.sim.SetHTTPChallengeAddr(fmt.Sprintf("127.0.0.1:%d", e.httpPort))
	if _, err := client.ConfirmVerification(ctx, api.ConfirmRequest{Domain: name, OrderID: v.OrderID}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := client.Finalize(ctx, []string{name}, nil); err != nil {
		e.t.Fatal(err)
	}
}

// serveHTTP serves h on addr until the test ends and returns the address.
func serveHTTP(t testing.TB, addr string, h http.HandlerFunc) string {
	t.Helper()
	// A port Caddy just closed may take a moment to be free.
	ln, err := net.Listen("tcp", addr)
	for deadline := time.Now().Add(5 * time.Second); err != nil && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
