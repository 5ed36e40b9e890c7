package sslci_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"

	sslci "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/internal/testdns"
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
	logFile                        string // set by captureLogs: Caddy logs there, as JSON
}

func newEnv(t testing.TB, opts sslcitest.Options) *testEnv {
	t.Helper()
	e := &testEnv{t: t, httpPort: sslci.FreePort(t), httpsPort: sslci.FreePort(t), adminPort: sslci.FreePort(t), storageDir: t.TempDir()}
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

// startCaddy runs Caddy with cfg until the test ends.
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
		config["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{
			"writer":  map[string]any{"output": "file", "filename": e.logFile},
			"encoder": map[string]any{"format": "json"},
		}}}
	}
	cfg, err := json.Marshal(config)
	if err != nil {
		e.t.Fatal(err)
	}
	e.startCaddy(cfg)
	app, err := caddy.ActiveContext().App("tls")
	if err != nil {
		e.t.Fatal(err)
	}
	return app.(*caddytls.TLS).Automation.Policies[0].Issuers[0].(*sslci.Issuer)
}

// restartIssuer stops the running Caddy and starts one with another issuer
// config on the same storage and simulator.
func (e *testEnv) restartIssuer(fields map[string]any) *sslci.Issuer {
	e.t.Helper()
	if err := caddy.Stop(); err != nil {
		e.t.Fatal(err)
	}
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
	var files []string
	filepath.WalkDir(filepath.Join(e.storageDir, "acme"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
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

// keep stores chainPEM where certmagic stores the certificate for names
// (the sorted names joined by commas), as it does with what Issue returns:
// for tests that call Issue directly. The ledger deletes at SSLCI a
// certificate Issue returned that storage does not hold.
func (e *testEnv) keep(chainPEM []byte, names ...string) {
	e.t.Helper()
	sorted := slices.Sorted(slices.Values(names))
	fs := &certmagic.FileStorage{Path: e.storageDir}
	if err := fs.Store(context.Background(), certmagic.StorageKeys.SiteCert(e.issuerKey(), strings.Join(sorted, ",")), chainPEM); err != nil {
		e.t.Fatal(err)
	}
}
