package sslci_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"

	sslci "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// startIssuer runs a Caddy with only the TLS app (nothing listens on the
// HTTP port, so the issuer answers the check itself) and returns the
// provisioned issuer of its one automation policy. fields are extra JSON
// fields of the issuer.
func (e *testEnv) startIssuer(fields map[string]any) *sslci.Issuer {
	e.t.Helper()
	issuer := map[string]any{
		"module":              "sslci",
		"token":               "{env.SSLCI_TEST_TOKEN}",
		"endpoint":            e.sim.URL(),
		"listen_host":         "127.0.0.1",
		"alternate_http_port": e.httpPort,
	}
	for k, v := range fields {
		issuer[k] = v
	}
	cfg, err := json.Marshal(map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": e.storageDir},
		"apps": map[string]any{"tls": map[string]any{"automation": map[string]any{
			"policies": []any{map[string]any{"issuers": []any{issuer}}},
		}}},
	})
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

func newCSR(t testing.TB, names ...string) (*x509.CertificateRequest, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
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

// A CSR with several names: one verification and one confirmation per
// name, one finalize; the answer is served by the issuer's own listener
// since nothing else listens on the HTTP port. A second issuance inside the
// verification window costs only the finalize; once SSLCI forgets the
// verifications, finalize is refused, and the issuer verifies again.
func TestIssueSeveralNames(t *testing.T) {
	e := newEnv(t, sslcitest.Options{SignCSR: true})
	iss := e.startIssuer(nil)
	names := []string{"a.multi.test", "b.multi.test", "c.multi.test"}
	csr, key := newCSR(t, names...)

	cert, err := iss.Issue(context.Background(), csr)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	leaf := e.parseChain(cert.Certificate, names...)
	if !key.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("the simulator was asked to sign the CSR, but the certificate is for another key")
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpRequest: 3, sslcitest.OpConfirm: 3, sslcitest.OpFinalize: 1})
	meta, _ := json.Marshal(cert.Metadata)
	if !strings.Contains(string(meta), `"key_source":"csr"`) || !strings.Contains(string(meta), `"a.multi.test"`) {
		t.Errorf("metadata = %s", meta)
	}

	e.sim.ResetRequests()
	if _, err := iss.Issue(context.Background(), csr); err != nil {
		t.Fatalf("second Issue: %v", err)
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpFinalize: 1})

	e.sim.ResetRequests()
	e.sim.ExpireVerifications()
	if _, err := iss.Issue(context.Background(), csr); err != nil {
		t.Fatalf("Issue after the provider forgot the verifications: %v", err)
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpFinalize: 2, sslcitest.OpRequest: 3, sslcitest.OpConfirm: 3})
}

// The documented mode: the simulator generates the key. Issue returns the
// certificate for that key; with require_csr_key it refuses it.
func TestIssueServerGeneratedKey(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(map[string]any{"require_csr_key": true})
	csr, _ := newCSR(t, "strict.test")
	_, err := iss.Issue(context.Background(), csr)
	if err == nil || !strings.Contains(err.Error(), "require_csr_key") {
		t.Fatalf("Issue = %v, want an error naming require_csr_key", err)
	}
}

// Each way an issuance can fail gives an error that names the problem,
// leaves no order pending at the simulator and no challenge in storage.
func TestIssueFailures(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(map[string]any{"verification_timeout": "3s"})
	token := e.sim.Token()

	cases := []struct {
		name    string
		setup   func()
		wantErr []string
		wantIs  error
	}{
		{
			name:    "check cannot reach the HTTP port",
			setup:   func() { e.sim.SetHTTPChallengeAddr(fmt.Sprintf("127.0.0.1:%d", freePort(t))) },
			wantErr: []string{"fail.test", "confirming the verification", "HTTP 400"},
			wantIs:  api.ErrInvalidRequest,
		},
		{
			name:    "certificate for other names",
			setup:   func() { e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultWrongNames, 1) },
			wantErr: []string{"refused", "does not cover fail.test"},
		},
		{
			name:    "broken PEM",
			setup:   func() { e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultBrokenPEM, 1) },
			wantErr: []string{"crt"},
		},
		{
			name:    "certificate for an unknown key",
			setup:   func() { e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultWrongKey, 1) },
			wantErr: []string{"neither the CSR's key nor the key SSLCI returned"},
		},
		{
			name:    "expired certificate",
			setup:   func() { e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultExpired, 1) },
			wantErr: []string{"not valid now"},
		},
		{
			name:    "verification never decided",
			setup:   func() { e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1000) },
			wantErr: []string{"fail.test", "still in progress", "verification_timeout"},
			wantIs:  api.ErrPending,
		},
		{
			name:    "malformed finalize answer",
			setup:   func() { e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultMalformedJSON, 1) },
			wantErr: []string{"finalize", "malformed"},
			wantIs:  api.ErrMalformed,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.sim.SetHTTPChallengeAddr(fmt.Sprintf("127.0.0.1:%d", e.httpPort))
			e.sim.ExpireVerifications() // every case verifies afresh
			tc.setup()
			csr, _ := newCSR(t, "fail.test")
			_, err := iss.Issue(context.Background(), csr)
			if err == nil {
				t.Fatal("Issue succeeded")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %q is not %v", err, tc.wantIs)
			}
			if strings.Contains(err.Error(), token) {
				t.Error("the error contains the token")
			}
			if left := e.sim.PendingOrders(token); len(left) != 0 {
				t.Errorf("orders left pending: %+v", left)
			}
			if files := e.storageFiles("acme"); len(files) != 0 {
				t.Errorf("challenge data left in storage: %v", files)
			}
			e.sim.InjectFault(sslcitest.OpAny, sslcitest.FaultNone, 0)
		})
	}
}

// A wrong token is refused by the API at the first request: the error says
// so (without the token), and nothing is created.
func TestIssueWrongToken(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	const wrong = "not-the-token-0123456789"
	iss := e.startIssuer(map[string]any{"token": wrong})
	csr, _ := newCSR(t, "token.test")
	_, err := iss.Issue(context.Background(), csr)
	if !errors.Is(err, api.ErrUnauthorized) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Issue = %v, want an authentication failure (401)", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("the error contains the token: %v", err)
	}
	if left := e.sim.PendingOrders(e.sim.Token()); len(left) != 0 {
		t.Errorf("orders pending: %+v", left)
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpRequest: 1})
}

// Server faults on the way are retried where that is safe, and the
// certificate is obtained; the retries are visible in the simulator's log.
func TestIssueRetriesServerFaults(t *testing.T) {
	e := newEnv(t, sslcitest.Options{Faults: sslcitest.FaultRates{RetryAfter: time.Second}})
	iss := e.startIssuer(nil)
	e.sim.InjectFault(sslcitest.OpRequest, sslcitest.FaultRateLimit, 1)   // POST declined: safe to repeat
	e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultServerError, 1) // PUT is idempotent
	e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 2)     // the provider is still checking
	e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultUnavailable, 1)
	csr, _ := newCSR(t, "retry.test")
	cert, err := iss.Issue(context.Background(), csr)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	e.parseChain(cert.Certificate, "retry.test")
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpRequest: 2, sslcitest.OpConfirm: 4, sslcitest.OpFinalize: 2})
}

// Cancelling the caller's context stops the issuance promptly, and the
// order is still cancelled at the simulator.
func TestIssueContextCancelled(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(nil)
	e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	csr, _ := newCSR(t, "cancel.test")
	_, err := iss.Issue(ctx, csr)
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, api.ErrPending) {
		t.Fatalf("Issue = %v, want the context's deadline", err)
	}
	if left := e.sim.PendingOrders(e.sim.Token()); len(left) != 0 {
		t.Errorf("orders left pending: %+v", left)
	}
	if files := e.storageFiles("acme"); len(files) != 0 {
		t.Errorf("challenge data left in storage: %v", files)
	}
}

// Names SSLCI cannot verify over HTTP are refused before any API request.
func TestPreCheckRefusesBeforeAnyRequest(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(nil)
	for _, names := range [][]string{{"*.wild.test"}, {"ok.test", "*.wild.test"}} {
		csr, _ := newCSR(t, names...)
		_, err := iss.Issue(context.Background(), csr)
		if err == nil || !strings.Contains(err.Error(), "wildcard") || !strings.Contains(err.Error(), "DNS") {
			t.Errorf("Issue(%v) = %v, want a wildcard-needs-DNS error", names, err)
		}
	}
	if err := iss.PreCheck(context.Background(), []string{"192.0.2.1"}, false); err == nil || !strings.Contains(err.Error(), "IP") {
		t.Errorf("PreCheck(IP) = %v", err)
	}
	if n := len(e.sim.Requests()); n != 0 {
		t.Errorf("refused names cost %d API requests", n)
	}
}

// A config that cannot work is refused when Caddy loads it, with an error
// that names the problem and never the token.
func TestConfigErrors(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	cases := []struct {
		fields map[string]any
		want   string
	}{
		{map[string]any{"token": ""}, "token is empty"},
		{map[string]any{"token": "{env.SSLCI_TEST_UNSET_VARIABLE}"}, "placeholder"},
		{map[string]any{"token": "secret{weird}token"}, "placeholder"},
		{map[string]any{"endpoint": "http://www.sslci.com/api"}, "plain http is allowed only for loopback"},
		{map[string]any{"endpoint": "https://www.sslci.com/api?token=x"}, "must not contain"},
		{map[string]any{"method": "email"}, `unknown method "email"`},
		{map[string]any{"method": "dns"}, "needs a DNS provider"},
		{map[string]any{"method": "http", "dns": map[string]any{"provider": map[string]any{"name": "testdns", "server": "127.0.0.1:1"}}}, "method is http but a DNS challenge"},
		{map[string]any{"dns": map[string]any{"provider": map[string]any{"name": "nosuch"}}}, "dns.providers.nosuch"},
		{map[string]any{"timeout": "-1s"}, "must not be negative"},
	}
	for _, tc := range cases {
		issuer := map[string]any{"module": "sslci", "token": "{env.SSLCI_TEST_TOKEN}", "endpoint": e.sim.URL()}
		for k, v := range tc.fields {
			issuer[k] = v
		}
		cfg, _ := json.Marshal(map[string]any{
			"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
			"apps": map[string]any{"tls": map[string]any{"automation": map[string]any{
				"policies": []any{map[string]any{"issuers": []any{issuer}}},
			}}},
		})
		err := caddy.Load(cfg, true)
		if err == nil {
			caddy.Stop()
			t.Errorf("config %v loaded", tc.fields)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %v: error %q does not say %q", tc.fields, err, tc.want)
		}
		if strings.Contains(err.Error(), "weird") || strings.Contains(err.Error(), e.sim.Token()) {
			t.Errorf("config %v: error %q contains the token", tc.fields, err)
		}
	}
}
