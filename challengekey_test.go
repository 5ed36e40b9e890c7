package sslci

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/ledger"
	"github.com/sslci/caddy-sslci/internal/testport"
)

// The HTTP solver writes a challenge where certmagic's own handler, the one
// Caddy's HTTP servers run (ACMEIssuer.HandleHTTPChallenge), looks it up
// for each issuer of the policy: acme/<issuer key>/challenge_tokens/<name>.json.
// If certmagic moves it, this test fails before a real check does.
func TestChallengeFoundByCertmagic(t *testing.T) {
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	key := issuerKeyFor("https://sslci.example/api")
	iss := &Issuer{
		issuerKey:         key,
		ledger:            &ledger.Ledger{Keys: ledger.Keys{IssuerKey: key}},
		logger:            zap.NewNop(),
		ListenHost:        "127.0.0.1",
		AlternateHTTPPort: testport.Get(t),
	}
	iss.ledger.SetStorage(storage)
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           zap.NewNop(),
	})
	defer cache.Stop()
	cfg = certmagic.New(cache, certmagic.Config{Storage: storage, Issuers: []certmagic.Issuer{iss}, Logger: zap.NewNop()})
	answerer := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{Logger: zap.NewNop()})
	answer := func() string {
		rec := httptest.NewRecorder()
		answerer.HandleHTTPChallenge(rec, httptest.NewRequest("GET", "http://where.test/.well-known/acme-challenge/tok-123", nil))
		return rec.Body.String()
	}

	v := &api.Verification{Domain: "where.test", Method: api.MethodHTTP, Token: "tok-123",
		FilePath: challengeBasePath + "tok-123", Content: "tok-123.key-authorization"}
	cleanUp, err := (&httpSolver{iss: iss}).Present(context.Background(), v, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := answer(); got != v.Content {
		cleanUp()
		t.Fatalf("certmagic answered %q, want the key authorization: it no longer finds the challenge where challenge.go stores it", got)
	}
	cleanUp()
	if got := answer(); got == v.Content {
		t.Error("certmagic still answers after the clean-up")
	}
}
