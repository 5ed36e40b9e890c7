package sslci_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/caddyserver/certmagic"

	sslci "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/sslcitest"
)

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
}

func newEnv(t testing.TB, opts sslcitest.Options) *testEnv {
	t.Helper()
	e := &testEnv{t: t, httpPort: freePort(t), httpsPort: freePort(t), adminPort: freePort(t), storageDir: t.TempDir()}
	opts.HTTPChallengeAddr = fmt.Sprintf("127.0.0.1:%d", e.httpPort)
	sim, err := sslcitest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	e.sim = sim
	t.Setenv("SSLCI_TEST_TOKEN", sim.Token())
	return e
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
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

// issuerBlock is the `issuer sslci` directive for the simulator.
func (e *testEnv) issuerBlock(extra string) string {
	if extra != "" {
		extra = "\n\t\t\t" + extra
	}
	return fmt.Sprintf("issuer sslci {env.SSLCI_TEST_TOKEN} {\n\t\t\tendpoint %s%s\n\t\t}", e.sim.URL(), extra)
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

// storageFiles lists the files under a storage prefix.
func (e *testEnv) storageFiles(prefix string) []string {
	var files []string
	root := filepath.Join(e.storageDir, prefix)
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, e.storageDir+"/"))
		}
		return nil
	})
	return files
}
