package sslci_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// Parity with Caddy's ACME issuer, so that `cert_issuer sslci` replaces an
// ACME setup as it is: network_proxy, the TLS app's resolvers and DNS
// provider; and SSLCI's own key compared with the policy's key_type.

// forwardProxy is an egress proxy on loopback: it tunnels CONNECT (an
// https endpoint) and forwards absolute-form requests (plain http), and
// records the request target of each. With refuse, it answers everything
// 403 Forbidden.
type forwardProxy struct {
	*httptest.Server
	refuse bool

	mu   sync.Mutex
	seen []string // "METHOD target"
}

func newForwardProxy(t *testing.T, refuse bool) *forwardProxy {
	p := &forwardProxy{refuse: refuse}
	p.Server = httptest.NewServer(p) // 127.0.0.1
	t.Cleanup(p.Close)
	return p
}

func (p *forwardProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

func (p *forwardProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.seen = append(p.seen, r.Method+" "+r.RequestURI)
	p.mu.Unlock()
	if p.refuse {
		http.Error(w, "egress denied", http.StatusForbidden)
		return
	}
	if r.Method == http.MethodConnect {
		dst, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			dst.Close()
			return
		}
		conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		go func() { io.Copy(dst, buf); dst.Close(); conn.Close() }()
		io.Copy(conn, dst)
		conn.Close()
		dst.Close()
		return
	}
	if !r.URL.IsAbs() {
		http.Error(w, "not a proxy request", http.StatusBadRequest)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	resp, err := (&http.Transport{}).RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// One Caddy, three sites, each with its own network_proxy: every API
// request goes through the proxy of its issuer, loopback endpoint or not
// (Go's environment proxy skips loopback; the url module does not).
//   - a: a plain-http simulator through proxy P, which sees each API
//     request: exactly the simulator's;
//   - b: an https simulator through P, named by a placeholder: CONNECT
//     tunnels to the simulator;
//   - c: the same https simulator and token as b, through a proxy that
//     refuses: a clear error naming the proxy, and no request reaches the
//     simulator (so b and c have clients of their own).
//
// No URL any proxy saw holds a token, nor does Caddy's log.
func TestNetworkProxy(t *testing.T) {
	e := newEnv(t, sslcitest.Options{TLS: true})
	plainEnv := *e
	plain, err := sslcitest.NewServer(sslcitest.Options{HTTPChallengeAddr: fmt.Sprintf("127.0.0.1:%d", e.httpPort)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plain.Close)
	plainEnv.sim = plain
	plainEnv.rootFile = filepath.Join(t.TempDir(), "plain-root.pem")
	if err := os.WriteFile(plainEnv.rootFile, plain.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSLCI_TEST_PLAIN_TOKEN", plain.Token())

	proxy, refusing := newForwardProxy(t, false), newForwardProxy(t, true)
	t.Setenv("SSLCI_TEST_PROXY", proxy.URL)
	e.startCaddy(e.withLog(adapt(t, e.globalOptions("")+fmt.Sprintf(`
a.proxy.test {
	tls {
		issuer sslci {env.SSLCI_TEST_PLAIN_TOKEN} {
			endpoint %s
			trusted_roots %s
			network_proxy url %s
		}
	}
	respond "a"
}
b.proxy.test {
	tls {
		%s
	}
	respond "b"
}
c.proxy.test {
	tls {
		%s
	}
	respond "c"
}
`, plain.URL(), plainEnv.rootFile, proxy.URL, e.issuerBlock("network_proxy url {env.SSLCI_TEST_PROXY}"), e.issuerBlock("network_proxy url "+refusing.URL)))))

	plainEnv.waitForCertificate("a.proxy.test", nil, time.Minute)
	e.waitForCertificate("b.proxy.test", nil, time.Minute)

	plainHost, simHost := hostOf(t, plain.URL()), hostOf(t, e.sim.URL())
	var forwarded, tunnels int
	for _, r := range proxy.requests() {
		switch {
		case strings.HasPrefix(r, "POST http://"+plainHost+"/") || strings.HasPrefix(r, "GET http://"+plainHost+"/") ||
			strings.HasPrefix(r, "PUT http://"+plainHost+"/") || strings.HasPrefix(r, "DELETE http://"+plainHost+"/"):
			forwarded++
		case r == "CONNECT "+simHost:
			tunnels++
		default:
			t.Errorf("the proxy saw %q, which is neither API", r)
		}
	}
	if n := len(plain.Requests()); forwarded != n || n == 0 {
		t.Errorf("the proxy forwarded %d requests to the plain-http simulator, which saw %d", forwarded, n)
	}
	if tunnels == 0 {
		t.Error("no CONNECT tunnel to the https simulator went through the proxy")
	}

	// c: its first attempt fails at the refusing proxy, with its name.
	want := fmt.Sprintf("the network proxy %s refused to connect to %s: 403 Forbidden", hostOf(t, refusing.URL), simHost)
	deadline := time.Now().Add(30 * time.Second)
	for !slices.ContainsFunc(e.logLines("SSLCI request failed; retrying within this issuance"), func(l map[string]any) bool {
		return fmt.Sprint(l["identifiers"]) == "[c.proxy.test]" && strings.Contains(fmt.Sprint(l["error"]), want)
	}) {
		if time.Now().After(deadline) {
			t.Fatalf("no retry of c.proxy.test saying %q; log: %v", want, e.logLines(""))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := refusing.requests(); len(got) == 0 || got[0] != "CONNECT "+simHost {
		t.Errorf("the refusing proxy saw %v, want CONNECT %s first", got, simHost)
	}
	for _, r := range e.sim.Requests() {
		if slices.Contains(r.Domains, "c.proxy.test") {
			t.Errorf("a request for c.proxy.test reached the simulator past the refusing proxy: %+v", r)
		}
	}

	tokens := append(e.sim.Tokens(), plain.Tokens()...)
	for _, r := range append(proxy.requests(), refusing.requests()...) {
		for _, tok := range tokens {
			if strings.Contains(r, tok) {
				t.Errorf("a proxy saw the token in %q", r)
			}
		}
	}
	for _, tok := range tokens {
		if e.logHas(tok) {
			t.Error("Caddy's log holds a token")
		}
	}
}

func hostOf(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// The TLS app's global options, as the ACME issuer takes them. Its DNS
// provider (`dns`) cannot be reached from another module: an issuer with
// method dns and no provider of its own fails the load, saying to name it
// in the block and why. Its resolvers (`tls_resolvers`) check the record
// of an issuer that names none: the test DNS server is the only one that
// knows the zone, so the certificate proves they were used; and `caddy
// sslci check` says it asked them.
func TestTLSAppDNSDefaults(t *testing.T) {
	e, dnsSrv := newDNSEnv(t, "example.test")
	site := func(block string) string {
		return fmt.Sprintf("\nres.example.test {\n\ttls {\n\t\t%s\n\t}\n\trespond \"res\"\n}\n", e.issuerBlock(block))
	}

	err := caddy.Load(adapt(t, e.globalOptions("dns testdns "+dnsSrv.Addr())+site("method dns")), true)
	if err == nil {
		caddy.Stop()
		t.Fatal("an issuer with method dns and only a global dns provider loaded")
	}
	for _, want := range []string{"sslci: method dns needs a DNS provider in the issuer's own block", "Caddy lets only its own ACME issuer reach it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	caddyfile := e.globalOptions("tls_resolvers "+dnsSrv.Addr()) + site("dns testdns "+dnsSrv.Addr()+"\n\t\t\tpropagation_timeout 10s")
	e.startCaddy(adapt(t, caddyfile))
	e.waitForCertificate("res.example.test", nil, time.Minute)

	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := e.runSSLCI("check", "--config", path, "res.example.test")
	if err != nil || !strings.Contains(out, "the resolvers "+dnsSrv.Addr()+" serve the probe TXT record") {
		t.Errorf("check did not ask the TLS app's resolvers (%v):\n%s", err, out)
	}
}

// A certificate for SSLCI's key (the simulator makes P-256 keys) is
// compared with its policy: under key_type p384 and must_staple, one
// warning names both key types and must-staple, once for the
// certificate, even when a restarted Caddy loads it again; under the
// default key_type (p256) and no must-staple, none.
func TestSSLCIKeyVersusPolicy(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	cfg := adapt(t, e.globalOptions("")+fmt.Sprintf(`
mismatch.sslci.test {
	tls {
		key_type p384
		%s
	}
	respond "mismatch"
}
match.sslci.test {
	tls {
		%s
	}
	respond "match"
}
`, e.issuerBlock(""), e.issuerBlock("")))
	cfg = e.withLog(withMustStaple(t, cfg, "mismatch.sslci.test"))
	e.startCaddy(cfg)
	mismatch := e.waitForCertificate("mismatch.sslci.test", nil, time.Minute)
	e.waitForCertificate("match.sslci.test", nil, time.Minute)
	e.waitForLogLine("certificate obtained successfully", 10*time.Second)
	e.stopCaddy()
	e.startCaddy(cfg)
	if leaf := e.waitForCertificate("mismatch.sslci.test", nil, time.Minute); leaf.SerialNumber.Cmp(mismatch.SerialNumber) != 0 {
		t.Fatal("the restarted Caddy obtained another certificate")
	}

	var warned []map[string]any
	for _, l := range e.logLines("") {
		if strings.HasPrefix(fmt.Sprint(l["msg"]), "SSLCI's key does not match the policy") {
			warned = append(warned, l)
		}
	}
	if len(warned) != 1 {
		t.Fatalf("%d key policy warnings, want 1 (for mismatch.sslci.test): %v", len(warned), warned)
	}
	w := warned[0]
	for _, want := range []string{"SSLCI's key is p256 but the policy's key_type is p384", "must_staple", "require_csr_key"} {
		if !strings.Contains(fmt.Sprint(w["msg"]), want) {
			t.Errorf("warning %q does not say %q", w["msg"], want)
		}
	}
	if fmt.Sprint(w["identifiers"]) != "[mismatch.sslci.test]" || w["level"] != "warn" ||
		w["sslci_key_type"] != "p256" || w["policy_key_type"] != "p384" || w["serial"] != mismatch.SerialNumber.Text(16) {
		t.Errorf("warning fields: %v (served serial %s)", w, mismatch.SerialNumber.Text(16))
	}
}

// withMustStaple sets must_staple on the automation policy of subject.
func withMustStaple(t *testing.T, cfg []byte, subject string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(cfg, &m); err != nil {
		t.Fatal(err)
	}
	found := false
	tlsApp := m["apps"].(map[string]any)["tls"].(map[string]any)
	for _, p := range tlsApp["automation"].(map[string]any)["policies"].([]any) {
		policy := p.(map[string]any)
		if subjects, _ := policy["subjects"].([]any); slices.Contains(subjects, any(subject)) {
			policy["must_staple"], found = true, true
		}
	}
	if !found {
		t.Fatalf("no automation policy for %s", subject)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
