package sslci_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// While SSLCI's check is pending, the challenge is answered on Caddy's HTTP
// port, but only to a GET of the exact path for the exact host.
func TestChallengeAnsweredOnlyAsAsked(t *testing.T) {
	t.Run("by Caddy's HTTP server", func(t *testing.T) {
		e := newEnv(t, sslcitest.Options{})
		e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1000)
		e.startCaddy(adapt(t, e.globalOptions("")+fmt.Sprintf(`
chal.test {
	tls {
		%s
	}
	respond "site"
}
`, e.issuerBlock("verification_timeout 1m"))))
		e.probeChallenge("chal.test")
		e.sim.InjectFault(sslcitest.OpAny, sslcitest.FaultNone, 0)
		e.waitForCertificate("chal.test", nil, time.Minute)
	})
	t.Run("by the issuer where nothing listens", func(t *testing.T) {
		e := newEnv(t, sslcitest.Options{})
		e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1000)
		iss := e.startIssuer(map[string]any{"verification_timeout": "1m"})
		csr, _ := newCSR(t, "chal.test")
		done := make(chan error, 1)
		go func() { _, err := iss.Issue(context.Background(), csr); done <- err }()
		e.probeChallenge("chal.test")
		e.sim.InjectFault(sslcitest.OpAny, sslcitest.FaultNone, 0)
		if err := <-done; err != nil {
			t.Fatalf("Issue: %v", err)
		}
		if _, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", e.httpPort)); err == nil {
			t.Error("the issuer's own listener is still up after the verification")
		}
	})
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
