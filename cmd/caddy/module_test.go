package main

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// This package's tests import neither the issuer nor anything that does:
// the module is registered only if main links it.
func TestModuleLinked(t *testing.T) {
	mod, err := caddy.GetModule("tls.issuance.sslci")
	if err != nil {
		t.Fatalf("cmd/caddy does not link the sslci issuer: %v", err)
	}
	if got := mod.New().CaddyModule().ID; got != "tls.issuance.sslci" {
		t.Errorf("module ID = %q", got)
	}
}
