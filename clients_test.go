package sslci

import (
	"context"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// Issuers with the same endpoint, token and client settings share one API
// client, which lives until the last of them is cleaned up; other client
// settings get a client of their own.
func TestClientsShared(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	provision := func(maxConcurrent int) *Issuer {
		t.Helper()
		iss := &Issuer{Token: "shared-token", Endpoint: "http://127.0.0.1:1/api", MaxConcurrentRequests: maxConcurrent}
		if err := iss.loadClient(ctx); err != nil {
			t.Fatal(err)
		}
		return iss
	}
	a, b, other := provision(0), provision(0), provision(3)
	if a.client != b.client {
		t.Error("two issuers with the same settings have clients of their own")
	}
	if other.client == a.client || other.client.MaxConcurrent != 3 || a.client.MaxConcurrent != 16 {
		t.Errorf("bounds: %d and %d, want 16 and 3 on distinct clients", a.client.MaxConcurrent, other.client.MaxConcurrent)
	}
	for _, iss := range []*Issuer{a, other} {
		if err := iss.Cleanup(); err != nil {
			t.Fatal(err)
		}
	}
	if c := provision(0); c.client != b.client {
		t.Error("the client was released while an issuer still used it")
	}
	b.Cleanup()
	if n, ok := clients.References(b.clientKey); ok {
		t.Errorf("%d references left", n)
	}
}
