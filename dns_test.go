package sslci

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/testdns"
)

// The provider is loaded from its JSON through Caddy, as for the ACME
// issuer, and the record SSLCI asks for is published and then removed.
func TestDNSSolver(t *testing.T) {
	srv, err := testdns.Start("dnssolver.test", "delegated.test")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	t.Setenv("SSLCI_TEST_OVERRIDE", "_acme-challenge.delegated.test")
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()

	v := &api.Verification{
		Domain:     "www.dnssolver.test",
		Method:     api.MethodDNS,
		Content:    "txt-value",
		RecordName: "_acme-challenge.www.dnssolver.test",
	}
	for _, tc := range []struct {
		override, at string
	}{
		{at: v.RecordName},
		{override: "{env.SSLCI_TEST_OVERRIDE}", at: "_acme-challenge.delegated.test"},
	} {
		cfg := &caddytls.DNSChallengeConfig{
			ProviderRaw:        json.RawMessage(`{"name": "testdns", "server": "` + srv.Addr() + `"}`),
			TTL:                caddy.Duration(time.Minute),
			PropagationTimeout: caddy.Duration(5 * time.Second),
			Resolvers:          []string{srv.Addr()},
			OverrideDomain:     tc.override,
		}
		s, err := loadDNSSolver(cctx, cfg, nil, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.ProviderRaw) == 0 {
			t.Error("loading cleared the issuer's provider config")
		}
		cleanUp, err := s.Present(ctx, v, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := srv.TXT(tc.at); len(got) != 1 || got[0] != v.Content {
			t.Errorf("at %s: %q", tc.at, got)
		}
		cleanUp()
		if got := srv.TXT(tc.at); len(got) != 0 {
			t.Errorf("at %s after clean-up: %q", tc.at, got)
		}
	}

	srv.SetHidden(true)
	s, err := loadDNSSolver(cctx, &caddytls.DNSChallengeConfig{
		ProviderRaw:        json.RawMessage(`{"name": "testdns", "server": "` + srv.Addr() + `"}`),
		PropagationTimeout: caddy.Duration(time.Second),
		Resolvers:          []string{srv.Addr()},
	}, nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Present(ctx, v, nil); err == nil || !strings.Contains(err.Error(), v.RecordName) {
		t.Errorf("never visible: error %v", err)
	}
	if got := srv.TXT(v.RecordName); len(got) != 0 {
		t.Errorf("left behind: %q", got)
	}
}

func TestLoadDNSSolverErrors(t *testing.T) {
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for name, cfg := range map[string]*caddytls.DNSChallengeConfig{
		"no config":      nil,
		"no provider":    {},
		"unknown module": {ProviderRaw: json.RawMessage(`{"name": "no-such-provider"}`)},
		"bad provider":   {ProviderRaw: json.RawMessage(`{"name": "testdns"}`)},
		"bad override":   {ProviderRaw: json.RawMessage(`{"name": "testdns", "server": "127.0.0.1:1"}`), OverrideDomain: "{env.SSLCI_TEST_UNSET_VARIABLE}"},
	} {
		if _, err := loadDNSSolver(cctx, cfg, nil, zap.NewNop()); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
