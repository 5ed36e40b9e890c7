package sslci_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/internal/testport"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// A Caddyfile site gets its certificate through the module: the
// simulator's HTTP check reaches Caddy's own HTTP server (the automatic
// HTTPS redirect server, with no route of ours), and a TLS client with SNI
// verifies the served chain against the simulator's root. The simulator
// generates the key, as SSLCI documents: the issuer must store that key in
// place of Caddy's, or the handshake could not succeed.
func TestCaddyfileSiteObtainsCertificate(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	e.startCaddy(e.siteConfig("", "site.test", ""))

	leaf := e.waitForCertificate("site.test", nil, time.Minute)
	if got := strings.Join(leaf.DNSNames, ","); got != "site.test" {
		t.Errorf("certificate names = %q, want site.test", got)
	}
	if status, body := e.get("site.test", "/"); status != http.StatusOK || body != "hello from site.test" {
		t.Errorf("GET = %d %q", status, body)
	}
	// One verification request, one confirmation, one finalize: nothing
	// else, but the one GET list per account and storage that tells the
	// ledger which orders were there before (ledger.go: ensureFloor).
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1})
	if meta := e.storedMetadata("site.test"); meta["key_source"] != "sslci" {
		t.Errorf("metadata key_source = %v, want sslci (the simulator generated the key); metadata: %v", meta["key_source"], meta)
	}
	if !e.storedKeyMatches("site.test", leaf) {
		t.Error("the private key in storage is not the served certificate's")
	}
	e.checkNothingLeft(t)
}

// With a simulator that signs the client's CSR, the served certificate is
// for the key Caddy generated, and the issuer says so in the metadata.
func TestCaddyfileSiteCSRHonoured(t *testing.T) {
	e := newEnv(t, sslcitest.Options{SignCSR: true})
	e.startCaddy(e.siteConfig("", "csr.test", "require_csr_key"))
	leaf := e.waitForCertificate("csr.test", nil, time.Minute)
	if meta := e.storedMetadata("csr.test"); meta["key_source"] != "csr" {
		t.Errorf("metadata key_source = %v, want csr", meta["key_source"])
	}
	if !e.storedKeyMatches("csr.test", leaf) {
		t.Error("the private key in storage is not the served certificate's")
	}
}

// The same site configured in JSON, posted to the admin API's /load; then
// a reload with another response keeps the certificate: no new issuance.
func TestJSONThroughAdminAPIAndReload(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	config := func(reply string) []byte {
		return []byte(fmt.Sprintf(`{
	"admin": {"listen": "127.0.0.1:%d", "config": {"persist": false}},
	"storage": {"module": "file_system", "root": %q},
	"apps": {
		"http": {
			"http_port": %d,
			"https_port": %d,
			"servers": {"srv0": {
				"listen": ["127.0.0.1:%d"],
				"routes": [{
					"match": [{"host": ["json.test"]}],
					"handle": [{"handler": "static_response", "body": %q}],
					"terminal": true
				}]
			}}
		},
		"tls": {"automation": {"policies": [{
			"subjects": ["json.test"],
			"issuers": [{"module": "sslci", "token": "{env.SSLCI_TEST_TOKEN}", "endpoint": %q, "trusted_roots_pem_files": [%q]}]
		}]}}
	}
}`, e.adminPort, e.storageDir, e.httpPort, e.httpsPort, e.httpsPort, reply, e.sim.URL(), e.rootFile))
	}
	// Start with only the admin endpoint, then load the real config through it.
	e.startCaddy([]byte(fmt.Sprintf(`{"admin": {"listen": "127.0.0.1:%d", "config": {"persist": false}}}`, e.adminPort)))
	e.postLoad(config("first"))

	leaf := e.waitForCertificate("json.test", nil, time.Minute)
	if _, body := e.get("json.test", "/"); body != "first" {
		t.Fatalf("body = %q, want first", body)
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1})

	e.postLoad(config("second"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, body := e.get("json.test", "/"); body == "second" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reloaded config is not served")
		}
		time.Sleep(100 * time.Millisecond)
	}
	again, err := e.handshake("json.test")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Raw, leaf.Raw) {
		t.Error("the reload replaced the certificate")
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1})
}

// Caddy renews short-lived certificates by itself. Inside SSLCI's 29-day
// verification window each renewal costs exactly one API request, the
// finalize, and the renewed certificate is served (with its new key, again
// SSLCI's, stored in place of Caddy's).
func TestRenewalCostsOneRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a renewal")
	}
	// Certificates live 30s past a notBefore backdated by a minute: 90s in
	// all. With a renewal window ratio of 0.28 Caddy renews about 5s after
	// each issuance; it looks every second.
	e := newEnv(t, sslcitest.Options{Validity: 30 * time.Second})
	cfg := e.siteConfig("renew_interval 1s", "renew.test", "")
	cfg = bytes.Replace(cfg, []byte(`"issuers"`), []byte(`"renewal_window_ratio":0.28,"issuers"`), 1)
	e.startCaddy(cfg)

	first := e.waitForCertificate("renew.test", nil, time.Minute)
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1})
	issuedBefore := len(e.sim.Certificates(e.sim.Token()))
	e.sim.ResetRequests()

	renewed := e.waitForCertificate("renew.test", first.SerialNumber.Bytes(), time.Minute)
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate expires %s, not after the first's %s", renewed.NotAfter, first.NotAfter)
	}
	// Every request since is a finalize, one per certificate issued.
	issued := len(e.sim.Certificates(e.sim.Token())) - issuedBefore
	c := e.counts()
	if issued < 1 || c[sslcitest.OpFinalize] != issued || len(e.sim.Requests()) != issued {
		t.Errorf("renewals made %d certificates with requests %v; want exactly one finalize per certificate and nothing else", issued, c)
	}
	if !e.storedKeyMatches("renew.test", renewed) {
		t.Error("the private key in storage is not the renewed certificate's")
	}
}

// On-demand TLS: the first handshake for a name the ask endpoint allows
// gets a certificate issued through the module; a refused name costs no
// API request.
func TestOnDemand(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	askPort := testport.Get(t)
	ask := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", askPort), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("domain") != "ondemand.test" {
			http.Error(w, "no", http.StatusForbidden)
		}
	})}
	go ask.ListenAndServe()
	t.Cleanup(func() { ask.Close() })

	e.startCaddy(adapt(t, e.globalOptions(fmt.Sprintf("on_demand_tls {\n\t\task http://127.0.0.1:%d/ask\n\t}", askPort))+fmt.Sprintf(`
https:// {
	tls {
		on_demand
		%s
	}
	respond "on demand {host}"
}
`, e.issuerBlock(""))))

	if _, err := e.handshake("denied.test"); err == nil {
		t.Error("a handshake for a name the ask endpoint refuses succeeded")
	}
	if n := len(e.sim.Requests()); n != 0 {
		t.Errorf("a refused name cost %d API requests", n)
	}
	leaf, err := e.handshake("ondemand.test")
	if err != nil {
		t.Fatalf("on-demand handshake: %v; simulator log: %+v", err, e.sim.Requests())
	}
	if leaf.DNSNames[0] != "ondemand.test" {
		t.Errorf("names = %v", leaf.DNSNames)
	}
	if _, body := e.get("ondemand.test", "/"); body != "on demand ondemand.test" {
		t.Errorf("body = %q", body)
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1})
}
