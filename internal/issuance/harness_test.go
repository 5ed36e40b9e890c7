package issuance

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/ledger"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// env is an issuer over the simulator on loopback HTTP and file storage,
// verifying by DNS through the simulator's LookupTXT: the flow without a
// Caddy.
type env struct {
	t   *testing.T
	sim *sslcitest.Server
	iss *Issuer

	mu      sync.Mutex
	txt     []string
	counted map[string]int // Metrics calls, "verification requested" and so on
}

// fastRetry is the default policy's attempts with no time between them.
var fastRetry = RetryPolicy{Attempts: DefaultRetry.Attempts, MinBackoff: time.Microsecond, MaxBackoff: time.Microsecond}

func newEnv(t *testing.T, opts sslcitest.Options) *env {
	t.Helper()
	e := &env{t: t, counted: map[string]int{}}
	opts.LookupTXT = func(context.Context, string) ([]string, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return append([]string(nil), e.txt...), nil
	}
	sim, err := sslcitest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	client, err := api.New(sim.URL(), sim.Token())
	if err != nil {
		t.Fatal(err)
	}
	client.HTTPClient = sim.HTTPClient()
	client.Retry.MaxAttempts = 1 // as the Caddy module sets it: the steps retry
	l := &ledger.Ledger{Keys: ledger.Keys{IssuerKey: "sslci-test", Account: "acct"}, Client: client, Logger: zap.NewNop()}
	l.SetStorage(&certmagic.FileStorage{Path: t.TempDir()})
	e.sim = sim
	e.iss = &Issuer{
		Endpoint: sim.URL(), Method: api.MethodDNS, Roots: sim.RootPool, Retry: fastRetry,
		Client: client, Ledger: l, Solver: e, Metrics: e, Logger: zap.NewNop(),
		RememberKey: func(*x509.CertificateRequest, []byte) {},
	}
	return e
}

// Present is the DNS solver: the simulator's check finds the content.
func (e *env) Present(_ context.Context, v *api.Verification, _ *ledger.OrderRecord) (func(), error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.txt = append(e.txt, v.Content)
	return func() {}, nil
}

func (e *env) count(what string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counted[what]++
}

func (e *env) Verification(method, result string) { e.count("verification " + result) }
func (e *env) Obtained(keySource string)          { e.count("obtained " + keySource) }
func (e *env) Refused(keySource string)           { e.count("refused " + keySource) }
func (e *env) Cancelled()                         { e.count("cancelled") }
func (e *env) Failed(step string)                 { e.count("failed " + step) }

// requests is the simulator's request count by operation.
func (e *env) requests() map[sslcitest.Op]int {
	out := map[sslcitest.Op]int{}
	for _, r := range e.sim.Requests() {
		out[r.Op]++
	}
	return out
}

// issue runs one Issue for names.
func (e *env) issue(names ...string) (*certmagic.IssuedCertificate, error) {
	e.t.Helper()
	csr, _ := sslcitest.NewCSR(e.t, names...)
	return e.iss.Issue(context.Background(), csr)
}

// store keeps an issued certificate and its metadata where certmagic does.
func (e *env) store(issued *certmagic.IssuedCertificate, names ...string) {
	e.t.Helper()
	l := e.iss.Ledger
	issuerData, err := json.Marshal(issued.Metadata)
	if err != nil {
		e.t.Fatal(err)
	}
	meta, err := json.Marshal(certmagic.CertificateResource{SANs: names, IssuerData: issuerData})
	if err != nil {
		e.t.Fatal(err)
	}
	for key, value := range map[string][]byte{l.Keys.SiteCert(ledger.NamesKey(names)): issued.Certificate, l.Keys.SiteMeta(ledger.NamesKey(names)): meta} {
		if err := l.Storage().Store(context.Background(), key, value); err != nil {
			e.t.Fatal(err)
		}
	}
}
