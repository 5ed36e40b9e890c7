package sslci_test

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/testport"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// A CSR with several names: one verification and one confirmation per
// name, one finalize; the answer is served by the issuer's own listener
// since nothing else listens on the HTTP port. A second issuance inside the
// verification window costs only the finalize (30-day certificates renew
// at day 20: their verifications are recorded); once SSLCI forgets the
// verifications, finalize is refused, and the issuer verifies again.
func TestIssueSeveralNames(t *testing.T) {
	e := newEnv(t, sslcitest.Options{SignCSR: true, Validity: 30 * 24 * time.Hour})
	iss := e.startIssuer(nil)
	names := []string{"a.multi.test", "b.multi.test", "c.multi.test"}
	csr, key := sslcitest.NewCSR(t, names...)

	cert, err := iss.Issue(context.Background(), csr)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	leaf := e.parseChain(cert.Certificate, names...)
	if !key.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("the simulator was asked to sign the CSR, but the certificate is for another key")
	}
	// Plus the account's one GET list before its first verification request.
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 3, sslcitest.OpConfirm: 3, sslcitest.OpFinalize: 1})
	meta, _ := json.Marshal(cert.Metadata)
	if !strings.Contains(string(meta), `"key_source":"csr"`) || !strings.Contains(string(meta), `"a.multi.test"`) {
		t.Errorf("metadata = %s", meta)
	}

	e.keep(cert, names...) // as certmagic does; a certificate not kept would be deleted at SSLCI
	e.sim.ResetRequests()
	second, err := iss.Issue(context.Background(), csr)
	if err != nil {
		t.Fatalf("second Issue: %v", err)
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpFinalize: 1})
	e.keep(second, names...)

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
	csr, _ := sslcitest.NewCSR(t, "strict.test")
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
			setup:   func() { e.sim.SetHTTPChallengeAddr(fmt.Sprintf("127.0.0.1:%d", testport.Get(t))) },
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
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.sim.SetHTTPChallengeAddr(fmt.Sprintf("127.0.0.1:%d", e.httpPort))
			e.sim.ExpireVerifications() // every case verifies afresh
			tc.setup()
			csr, _ := sslcitest.NewCSR(t, "fail.test")
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
			if !strings.HasPrefix(err.Error(), "sslci: ") || strings.Count(err.Error(), "sslci: ") != 1 {
				t.Errorf("error %q does not start with sslci: exactly once", err)
			}
			if strings.Contains(err.Error(), token) {
				t.Error("the error contains the token")
			}
			e.checkNothingLeft(t)
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
	csr, _ := sslcitest.NewCSR(t, "token.test")
	_, err := iss.Issue(context.Background(), csr)
	if !errors.Is(err, api.ErrUnauthorized) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Issue = %v, want an authentication failure (401)", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("the error contains the token: %v", err)
	}
	e.checkNothingLeft(t)
	// The account's first request is the GET list that sets the ledger's floor.
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1})
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
	csr, _ := sslcitest.NewCSR(t, "retry.test")
	cert, err := iss.Issue(context.Background(), csr)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	e.parseChain(cert.Certificate, "retry.test")
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 2, sslcitest.OpConfirm: 4, sslcitest.OpFinalize: 2})
}

// Cancelling the caller's context stops the issuance promptly, and the
// order is still cancelled at the simulator.
func TestIssueContextCancelled(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(nil)
	e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	csr, _ := sslcitest.NewCSR(t, "cancel.test")
	_, err := iss.Issue(ctx, csr)
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, api.ErrPending) {
		t.Fatalf("Issue = %v, want the context's deadline", err)
	}
	e.checkNothingLeft(t)
}

// Names SSLCI cannot verify over HTTP are refused before any API request.
func TestPreCheckRefusesBeforeAnyRequest(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(nil)
	for _, names := range [][]string{{"*.wild.test"}, {"ok.test", "*.wild.test"}} {
		csr, _ := sslcitest.NewCSR(t, names...)
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

// A config that cannot work is refused when Caddy loads it, with the
// error Provision gives (each case: TestProvisionErrors), never the token.
func TestConfigErrorThroughCaddyLoad(t *testing.T) {
	const weird = "secret{weird}token"
	cfg, err := json.Marshal(map[string]any{
		"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"apps": map[string]any{"tls": map[string]any{"automation": map[string]any{
			"policies": []any{map[string]any{"issuers": []any{
				map[string]any{"module": "sslci", "token": weird, "endpoint": "http://127.0.0.1:1/api"},
			}}},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = caddy.Load(cfg, true)
	if err == nil {
		caddy.Stop()
		t.Fatal("the config loaded")
	}
	if !strings.Contains(err.Error(), "sslci: the API token is empty, or names an unknown or empty placeholder") {
		t.Errorf("error %q does not say what is wrong with the token", err)
	}
	if strings.Contains(err.Error(), "weird") {
		t.Errorf("error %q shows the token", err)
	}
}
