package sslci_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	sslci "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/internal/testport"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// scrape returns the admin endpoint's /metrics, the caddy_sslci_ lines only.
func (e *testEnv) scrape() string {
	e.t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.adminPort))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /metrics: %s: %s", resp.Status, body)
	}
	var ours []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "caddy_sslci_") {
			ours = append(ours, line)
		}
	}
	return strings.Join(ours, "\n") + "\n"
}

// wantMetrics checks that each of want ("series value") is a line of got.
func wantMetrics(t *testing.T, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w+"\n") {
			t.Errorf("metrics lack %q; caddy_sslci_ metrics:\n%s", w, got)
		}
	}
}

// A real Caddy with its admin endpoint on loopback obtains certificates
// through two sslci issuers (two policies, one registry); /metrics then
// counts every API request, verification and certificate exactly, and
// each step logged one line naming the identifier and its order. A
// renewal reuses the verification, a failure cancels its order, and a
// reload provisions the issuers again into a new registry.
func TestMetricsAndLogs(t *testing.T) {
	// 30-day certificates renew at day 20, within the 28 days of reuse.
	e := newEnv(t, sslcitest.Options{Validity: 30 * 24 * time.Hour})
	site := func(name, issuerExtra, text string) string {
		return fmt.Sprintf("%s {\n\ttls {\n\t\t%s\n\t}\n\trespond %q\n}\n", name, e.issuerBlock(issuerExtra), text)
	}
	cfg := func(text string) []byte {
		return e.withLog(adapt(t, e.globalOptions("")+site("one.metrics.test", "", text)+site("two.metrics.test", "timeout 61s", text)))
	}
	e.startCaddy(cfg("hello"))
	e.waitForCertificate("one.metrics.test", nil, time.Minute)
	e.waitForCertificate("two.metrics.test", nil, time.Minute)
	issuers := activeIssuers(t)
	if len(issuers) != 2 {
		t.Fatalf("%d sslci issuers, want 2 (one per site)", len(issuers))
	}
	wantMetrics(t, e.scrape(),
		`caddy_sslci_api_requests_total{operation="request",status="200"} 2`,
		`caddy_sslci_api_requests_total{operation="confirm",status="200"} 2`,
		`caddy_sslci_api_requests_total{operation="finalize",status="200"} 2`,
		`caddy_sslci_api_request_duration_seconds_count{operation="finalize"} 2`,
		`caddy_sslci_verifications_total{method="http",result="requested"} 2`,
		`caddy_sslci_verifications_total{method="http",result="confirmed"} 2`,
		`caddy_sslci_certificates_obtained_total{key_source="sslci"} 2`,
	)

	// One line per step, with the identifier and the order.
	requested := e.logLines("verification requested")
	confirmed := e.logLines("verification confirmed")
	if len(requested) != 2 || len(confirmed) != 2 || len(e.logLines("finalizing the certificate")) != 2 {
		t.Fatalf("logged %d requested, %d confirmed lines, want 2 each", len(requested), len(confirmed))
	}
	orderOf := map[string]float64{}
	for _, l := range requested {
		orderOf[l["identifier"].(string)] = l["order_id"].(float64)
	}
	for _, l := range confirmed {
		if id := l["identifier"].(string); orderOf[id] != l["order_id"] || orderOf[id] == 0 {
			t.Errorf("confirmed line %v does not match the requested order %v", l, orderOf[id])
		}
	}
	for _, l := range e.logLines("certificate issued by SSLCI") {
		if l["key_source"] != "sslci" || l["verification_orders"] == nil {
			t.Errorf("issued line %v lacks key_source or the orders", l)
		}
	}

	// A renewal inside the window reuses the verification; its finalize
	// meets a 503 first, and the retry line names the identifier.
	var one *sslci.Issuer
	for _, iss := range issuers {
		if iss.Timeout == 0 { // not two's, which has "timeout 61s"
			one = iss
		}
	}
	e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultUnavailable, 1)
	csr, _ := sslcitest.NewCSR(t, "one.metrics.test")
	cert, err := one.Issue(context.Background(), csr)
	if err != nil {
		t.Fatalf("renewal: %v", err)
	}
	meta, _ := json.Marshal(cert.Metadata)
	wantMeta := fmt.Sprintf(`"order_ids":{"one.metrics.test":%d},"reused_verifications":["one.metrics.test"]`, int64(orderOf["one.metrics.test"]))
	if !strings.Contains(string(meta), wantMeta) {
		t.Errorf("metadata %s does not keep the reused order: want %s", meta, wantMeta)
	}
	reused := e.logLines("reusing a recent verification")
	if len(reused) != 1 || reused[0]["identifier"] != "one.metrics.test" || reused[0]["order_id"] != orderOf["one.metrics.test"] || reused[0]["age"] == nil {
		t.Errorf("reuse lines = %v, want one naming the identifier, its order and age", reused)
	}
	issued := e.logLines("certificate issued by SSLCI")
	if last := issued[len(issued)-1]; fmt.Sprint(last["verification_orders"]) != fmt.Sprintf("map[one.metrics.test:%v]", orderOf["one.metrics.test"]) {
		t.Errorf("issued line after reuse: verification_orders = %v", last["verification_orders"])
	}
	// The issuance's steps retry (the API client makes one attempt).
	retries := e.logLines("SSLCI request failed; retrying within this issuance")
	if len(retries) != 1 || fmt.Sprint(retries[0]["identifiers"]) != "[one.metrics.test]" {
		t.Errorf("retry lines = %v, want one naming the identifier", retries)
	}

	// A failed check: the order is cancelled, and that line names the name.
	e.forgetVerifications()
	e.sim.SetHTTPChallengeAddr(fmt.Sprintf("127.0.0.1:%d", testport.Get(t)))
	if _, err := one.Issue(context.Background(), csr); err == nil {
		t.Fatal("Issue succeeded with the check unreachable")
	}
	cancelled := e.logLines("cancelled SSLCI order")
	if len(cancelled) != 1 || cancelled[0]["identifier"] != "one.metrics.test" {
		t.Errorf("cancel lines = %v, want one naming the identifier", cancelled)
	}
	wantMetrics(t, e.scrape(),
		`caddy_sslci_api_requests_total{operation="request",status="200"} 3`,
		`caddy_sslci_api_requests_total{operation="confirm",status="400"} 1`,
		`caddy_sslci_api_requests_total{operation="finalize",status="503"} 1`,
		`caddy_sslci_api_requests_total{operation="finalize",status="200"} 3`,
		`caddy_sslci_api_requests_total{operation="delete",status="200"} 1`,
		`caddy_sslci_verifications_total{method="http",result="requested"} 3`,
		`caddy_sslci_verifications_total{method="http",result="reused"} 1`,
		`caddy_sslci_verifications_total{method="http",result="failed"} 1`,
		`caddy_sslci_orders_cancelled_total 1`,
		`caddy_sslci_certificates_obtained_total{key_source="sslci"} 3`,
	)
	if len(e.logLines("another program holds the HTTP port and does not answer SSLCI's check, which will fail; "+
		"stop it, or have it pass /.well-known/acme-challenge/ to a free port set as alt_http_port (the issuer answers there), or verify by DNS")) != 0 {
		t.Error("warned about the HTTP port while Caddy's own server held it")
	}

	// A reload makes a new registry: the issuers register there again.
	e.sim.SetHTTPChallengeAddr(fmt.Sprintf("127.0.0.1:%d", e.httpPort))
	e.postLoad(cfg("hello again"))
	for _, iss := range activeIssuers(t) {
		if _, err := iss.Issue(context.Background(), csr); err != nil {
			t.Fatalf("Issue after reload: %v", err)
		}
	}
	wantMetrics(t, e.scrape(), `caddy_sslci_api_requests_total{operation="finalize",status="200"} 2`)

	if e.logHas(e.sim.Token()) {
		t.Error("the token is in Caddy's log")
	}
}

// metric is the value of series (name and labels, as /metrics spells
// them) in a scrape, and whether it is there.
func metric(scrape, series string) (float64, bool) {
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// waitForMetrics scrapes until every one of want ("series value") is there.
func (e *testEnv) waitForMetrics(limit time.Duration, want ...string) string {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got := e.scrape()
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return strings.Contains(got, w+"\n") })
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("metrics lack %q after %s; caddy_sslci_ metrics:\n%s", missing, limit, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// selfSigned is a certificate for name valid from notBefore to notAfter,
// as a site removed from the config leaves in storage.
func selfSigned(t testing.TB, name string, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{name}, NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// The expiry gauges of a real Caddy's /metrics, over both its sslci
// issuers (one per site block, on one storage: each certificate counted
// once): a certificate with a day left whose renewal fails (at its
// finalize, counted by step) is in its renewal window; one a removed
// site left expired yesterday is expired and the earliest; a certificate
// obtained on demand after Caddy read its storage is counted too. No
// label names a domain.
func TestExpiryMetrics(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	e.sim.Advance(-89 * 24 * time.Hour) // due.test's first certificate: 89 days ago by SSLCI's clock
	e.startCaddy(e.siteConfig("", "due.test", ""))
	e.waitForCertificate("due.test", nil, time.Minute)
	e.stopCaddy()
	e.sim.Advance(89 * 24 * time.Hour)
	goneNotAfter := time.Now().Add(-24 * time.Hour).Truncate(time.Second)
	writeFile(t, e.storageDir, certmagic.StorageKeys.SiteCert(e.issuerKey(), "gone.test"),
		selfSigned(t, "gone.test", goneNotAfter.Add(-90*24*time.Hour), goneNotAfter))
	e.sim.InjectRedirect(sslcitest.OpFinalize, http.StatusMovedPermanently, "http://127.0.0.1:1/api", 1)

	askPort := testport.Get(t)
	serveHTTP(t, fmt.Sprintf("127.0.0.1:%d", askPort), func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("domain") != "ondemand.test" {
			http.Error(w, "no", http.StatusForbidden)
		}
	})
	e.startCaddy(adapt(t, e.globalOptions(fmt.Sprintf("on_demand_tls {\n\t\task http://127.0.0.1:%d/ask\n\t}", askPort))+fmt.Sprintf(`
due.test {
	tls {
		%s
	}
	respond "due"
}
https:// {
	tls {
		on_demand
		%s
	}
	respond "on demand"
}
`, e.issuerBlock(""), e.issuerBlock("timeout 61s"))))
	if n := len(activeIssuers(t)); n != 2 {
		t.Fatalf("%d sslci issuers, want 2", n)
	}
	got := e.waitForMetrics(time.Minute,
		`caddy_sslci_issuance_failures_total{step="finalize"} 1`,
		`caddy_sslci_certificates_stored 2`,
	)
	wantMetrics(t, got,
		`caddy_sslci_certificates_in_renewal_window 1`,
		`caddy_sslci_certificates_expired 1`,
		`caddy_sslci_issuance_failures_total{step="request"} 0`,
		`caddy_sslci_issuance_failures_total{step="store"} 0`,
	)
	if v, ok := metric(got, "caddy_sslci_certificates_earliest_expiry_timestamp_seconds"); !ok || int64(v) != goneNotAfter.Unix() {
		t.Errorf("earliest expiry %v (%v), want gone.test's %d", v, ok, goneNotAfter.Unix())
	}

	if _, err := e.handshake("ondemand.test"); err != nil {
		t.Fatalf("on-demand handshake: %v", err)
	}
	got = e.waitForMetrics(time.Minute, `caddy_sslci_certificates_stored 3`)
	wantMetrics(t, got, `caddy_sslci_certificates_in_renewal_window 1`, `caddy_sslci_certificates_expired 1`)
	if strings.Contains(got, ".test") || strings.Contains(got, e.sim.Token()) {
		t.Errorf("a label names a domain or the token:\n%s", got)
	}
}

// Failures are counted once each by the step that failed, through a real
// Caddy: certmagic's storing of the certificate (its .crt write fails),
// then Issue calls failing at the request, the confirm, the finalize,
// the certificate check and a ledger write.
func TestFailuresByStep(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	plan := newFaultPlan(1, failWrite)
	plan.match = ".crt"
	e.startCaddy(e.withStorage(e.siteConfig("", "steps.test", ""), faultStorageConfig(t, e.storageDir, plan)))
	e.waitForMetrics(time.Minute, `caddy_sslci_issuance_failures_total{step="store"} 1`)
	iss := activeIssuers(t)[0]
	elsewhere := "http://127.0.0.1:1/api"
	for _, tc := range []struct {
		step, name string
		setUp      func()
	}{
		{"request", "request.steps.test", func() { e.sim.InjectRedirect(sslcitest.OpRequest, 301, elsewhere, 1) }},
		{"confirm", "confirm.steps.test", func() { e.sim.InjectRedirect(sslcitest.OpConfirm, 301, elsewhere, 1) }},
		// steps.test's verification is reused: these cost a finalize.
		{"finalize", "steps.test", func() { e.sim.InjectRedirect(sslcitest.OpFinalize, 301, elsewhere, 1) }},
		{"check", "steps.test", func() { e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultWrongNames, 1) }},
		{"store", "steps.test", func() { plan.failNext("/ledger/certificates/") }},
	} {
		tc.setUp()
		csr, _ := sslcitest.NewCSR(t, tc.name)
		if _, err := iss.Issue(context.Background(), csr); err == nil {
			t.Fatalf("%s: Issue succeeded", tc.step)
		}
	}
	wantMetrics(t, e.scrape(),
		`caddy_sslci_issuance_failures_total{step="request"} 1`,
		`caddy_sslci_issuance_failures_total{step="confirm"} 1`,
		`caddy_sslci_issuance_failures_total{step="finalize"} 1`,
		`caddy_sslci_issuance_failures_total{step="check"} 1`,
		`caddy_sslci_issuance_failures_total{step="store"} 2`,
	)
}
