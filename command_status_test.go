package sslci_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

type statusOutput struct {
	Accounts []struct {
		Endpoint     string `json:"endpoint"`
		Certificates []struct {
			Names           []string  `json:"names"`
			NotBefore       time.Time `json:"not_before"`
			NotAfter        time.Time `json:"not_after"`
			RenewAt         time.Time `json:"renew_at"`
			InRenewalWindow bool      `json:"in_renewal_window"`
			KeySource       string    `json:"key_source"`
			RenewalRequests int       `json:"renewal_requests"`
			Verifications   []struct {
				Name       string    `json:"name"`
				VerifiedAt time.Time `json:"verified_at"`
				OrderID    int64     `json:"order_id"`
				AtRenewal  string    `json:"at_renewal"`
			} `json:"verifications"`
			Error string `json:"error"`
		} `json:"certificates"`
		NotStored []string `json:"not_stored"`
		Unsettled []struct {
			Kind  string   `json:"kind"`
			Names []string `json:"names"`
			State string   `json:"state"`
			ID    int64    `json:"id"`
		} `json:"unsettled"`
	} `json:"accounts"`
}

// `caddy sslci status` with the Caddyfile of a real Caddy, run once that
// Caddy is stopped, sends no API request: it says, for SSLCI's 90-day
// certificates, that the default policy renews at day 60 and verifies the
// name again (3 requests), and that a policy with renewal_window_ratio 0.8
// renews at day 18 and reuses the verification (1 request); whose key
// each is for; and the order a failed issuance could not cancel, still
// waiting to be settled. As JSON, as a table, for some names, and with a
// storage whose reads fail: unknown, exit status 1.
func TestCommandStatus(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	issuer := e.issuerBlock("")
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	text := e.globalOptions("") + fmt.Sprintf(`
verify.status.test {
	tls {
		%s
	}
	respond "hello"
}

reuse.status.test {
	tls {
		renewal_window_ratio 0.8
		%s
	}
	respond "hello"
}
`, issuer, issuer)
	if err := os.WriteFile(caddyfile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := adapt(t, text)
	e.startCaddy(cfg)
	leaves := map[string]time.Time{
		"verify.status.test": e.waitForCertificate("verify.status.test", nil, time.Minute).NotAfter,
		"reuse.status.test":  e.waitForCertificate("reuse.status.test", nil, time.Minute).NotAfter,
	}
	// An issuance whose check fails and whose order cannot be cancelled.
	elsewhere := "http://127.0.0.1:1/api"
	e.sim.InjectRedirect(sslcitest.OpConfirm, http.StatusMovedPermanently, elsewhere, 1)
	e.sim.InjectRedirect(sslcitest.OpDelete, http.StatusMovedPermanently, elsewhere, 1)
	csr, _ := sslcitest.NewCSR(t, "left.status.test")
	if _, err := activeIssuers(t)[0].Issue(context.Background(), csr); err == nil {
		t.Fatal("Issue succeeded")
	}
	pending := e.sim.PendingOrders(e.sim.Token())
	if len(pending) != 1 {
		t.Fatalf("pending orders %+v, want the one left", pending)
	}
	e.stopCaddy()
	e.sim.ResetRequests()

	out, err := e.runSSLCI("status", "--config", caddyfile, "--json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var got statusOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	if len(got.Accounts) != 1 || got.Accounts[0].Endpoint != e.sim.URL() {
		t.Fatalf("accounts %+v, want the simulator's one (both issuers share it)", got.Accounts)
	}
	acct := got.Accounts[0]
	day := 24 * time.Hour
	for _, w := range []struct {
		name      string
		renewDay  time.Duration // after not_before
		atRenewal string
		requests  int
	}{
		{"verify.status.test", 60 * day, "verify", 3},
		{"reuse.status.test", 18 * day, "reuse", 1},
	} {
		found := false
		for _, c := range acct.Certificates {
			if len(c.Names) != 1 || c.Names[0] != w.name {
				continue
			}
			found = true
			if !c.NotAfter.Equal(leaves[w.name]) || c.KeySource != "sslci" || c.InRenewalWindow || c.Error != "" {
				t.Errorf("%s: %+v, want not_after %s, key sslci", w.name, c, leaves[w.name])
			}
			if d := c.RenewAt.Sub(c.NotBefore).Round(time.Hour); d != w.renewDay {
				t.Errorf("%s: renews %s after not_before, want %s", w.name, d, w.renewDay)
			}
			// The verification is recorded only where the renewal reuses it.
			recorded := len(c.Verifications) == 1 && c.Verifications[0].OrderID != 0 && time.Since(c.Verifications[0].VerifiedAt) < time.Minute
			if w.atRenewal == "verify" {
				recorded = len(c.Verifications) == 1 && c.Verifications[0].OrderID == 0 && c.Verifications[0].VerifiedAt.IsZero()
			}
			if !recorded || c.Verifications[0].AtRenewal != w.atRenewal || c.RenewalRequests != w.requests {
				t.Errorf("%s: verifications %+v, %d requests; want %s at renewal (the verification recorded only for a reuse), %d requests",
					w.name, c.Verifications, c.RenewalRequests, w.atRenewal, w.requests)
			}
		}
		if !found {
			t.Errorf("no status for %s: %+v", w.name, acct.Certificates)
		}
	}
	if len(acct.Certificates) != 2 {
		t.Errorf("%d certificates, want 2", len(acct.Certificates))
	}
	if u := acct.Unsettled; len(u) != 1 || u[0].Kind != "order" || u[0].Names[0] != "left.status.test" || u[0].State != "pending" || u[0].ID != pending[0].ID {
		t.Errorf("unsettled %+v, want order %d of left.status.test, pending", u, pending[0].ID)
	}

	out, err = e.runSSLCI("status", "--config", caddyfile)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	t.Logf("caddy sslci status:\n%s", out)
	for _, want := range []string{"RENEWS", "verify.status.test", "verify again", "3 requests", "reuse.status.test", "reuse (until ", "1 request\n",
		"left.status.test  pending", e.sim.URL()} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	// Some names; one without a certificate is said, with exit status 1.
	out, err = e.runSSLCI("status", "--config", caddyfile, "REUSE.status.test", "none.status.test")
	if err == nil || !strings.Contains(out, "reuse.status.test") || strings.Contains(out, "verify.status.test") ||
		!strings.Contains(out, "none.status.test: no certificate stored") || strings.Contains(out, "left.status.test") {
		t.Errorf("status of two names: %v\n%s", err, out)
	}

	// A certificate and the ledger that cannot be read are unknown, not absent.
	plan := newFaultPlan(0, failWrite)
	plan.setFailRead(func(op, key string) error {
		if strings.HasSuffix(key, "verify.status.test.crt") || op == "list" && strings.Contains(key, "/ledger/") {
			return errInjected
		}
		return nil
	})
	jsonFile := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(jsonFile, e.withStorage(cfg, faultStorageConfig(t, e.storageDir, plan)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = e.runSSLCI("status", "--config", jsonFile)
	t.Logf("caddy sslci status, unreadable storage: %v\n%s", err, out)
	if err == nil {
		t.Error("status with unreadable storage succeeded")
	}
	for _, want := range []string{"verify.status.test  unknown", "verify.status.test: unknown: ", errInjected.Error(), "reuse.status.test",
		"Ledger records waiting to be settled with SSLCI: unknown: "} {
		if !strings.Contains(out, want) {
			t.Errorf("status with unreadable storage lacks %q:\n%s", want, out)
		}
	}
	if n := len(e.sim.Requests()); n != 0 {
		t.Errorf("status sent %d API requests, want none", n)
	}
}
