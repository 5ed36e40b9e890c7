package testdns

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile" // the caddyfile adapter
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/libdns/libdns"
)

func caddyContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

func TestProviderModule(t *testing.T) {
	s := start(t, "module.test")
	t.Setenv("TESTDNS_SERVER", s.Addr())
	mod, err := caddyContext(t).LoadModuleByID("dns.providers.testdns", json.RawMessage(`{"server": "{env.TESTDNS_SERVER}"}`))
	if err != nil {
		t.Fatal(err)
	}
	p := mod.(*Provider)
	if p.Server != s.Addr() {
		t.Fatalf("server %q, want %q", p.Server, s.Addr())
	}

	ctx := context.Background()
	zone := "module.test."
	got, err := p.AppendRecords(ctx, zone, []libdns.Record{
		libdns.TXT{Name: "_acme-challenge", TTL: 90 * time.Second, Text: "one"},
		libdns.RR{Name: "_acme-challenge", Type: "TXT", Data: "two"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []libdns.Record{
		libdns.TXT{Name: "_acme-challenge", TTL: 90 * time.Second, Text: "one"},
		libdns.TXT{Name: "_acme-challenge", Text: "two"},
	}
	if !sameRecords(got, want) {
		t.Errorf("AppendRecords returned %v, want %v", got, want)
	}
	if v := s.TXT("_acme-challenge.module.test"); strings.Join(v, ",") != "one,two" {
		t.Errorf("stored %q", v)
	}
	if all, err := p.GetRecords(ctx, zone); err != nil || !sameRecords(all, want) {
		t.Errorf("GetRecords: %v, %v", all, err)
	}
	if _, err := p.AppendRecords(ctx, zone, []libdns.Record{libdns.RR{Name: "a", Type: "A", Data: "192.0.2.1"}}); err == nil {
		t.Error("AppendRecords of an A record: no error")
	}

	set := []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "three"}}
	if got, err := p.SetRecords(ctx, zone, set); err != nil || !sameRecords(got, set) {
		t.Errorf("SetRecords: %v, %v", got, err)
	}
	if v := s.TXT("_acme-challenge.module.test"); strings.Join(v, ",") != "three" {
		t.Errorf("after SetRecords: %q", v)
	}

	deleted, err := p.DeleteRecords(ctx, zone, []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "three"}})
	if err != nil || !sameRecords(deleted, set) {
		t.Errorf("DeleteRecords: %v, %v", deleted, err)
	}
	if v := s.TXT("_acme-challenge.module.test"); len(v) != 0 {
		t.Errorf("after DeleteRecords: %q", v)
	}

	s.Close()
	if _, err := p.AppendRecords(ctx, zone, set); err == nil {
		t.Error("AppendRecords with the server closed: no error")
	}
}

func TestProviderModuleWithoutServer(t *testing.T) {
	if _, err := caddyContext(t).LoadModuleByID("dns.providers.testdns", json.RawMessage(`{}`)); err == nil {
		t.Error("no error without a server address")
	}
}

// Caddy's ACME issuer loads the module from its "provider" object, as it
// loads the caddy-dns/* plugins.
func TestProviderInACMEIssuer(t *testing.T) {
	s := start(t, "acme.test")
	raw := `{"challenges": {"dns": {"provider": {"name": "testdns", "server": "` + s.Addr() + `"}}}}`
	mod, err := caddyContext(t).LoadModuleByID("tls.issuance.acme", json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mod.(*caddytls.ACMEIssuer); !ok {
		t.Fatalf("loaded %T", mod)
	}

	raw = `{"challenges": {"dns": {"provider": {"name": "testdns"}}}}`
	if _, err := caddyContext(t).LoadModuleByID("tls.issuance.acme", json.RawMessage(raw)); err == nil {
		t.Error("the ACME issuer provisioned a provider without a server")
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		input, server, err string
	}{
		{input: "testdns 127.0.0.1:5353", server: "127.0.0.1:5353"},
		{input: "testdns {\n server 127.0.0.1:5354\n}", server: "127.0.0.1:5354"},
		{input: "testdns", err: "missing server address"},
		{input: "testdns {\n}", err: "missing server address"},
		{input: "testdns 127.0.0.1:1 extra", err: "wrong argument count"},
		{input: "testdns {\n server\n}", err: "wrong argument count"},
		{input: "testdns {\n port 53\n}", err: "unrecognized subdirective 'port'"},
	} {
		var p Provider
		err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.input, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.input, err)
		case p.Server != tc.server:
			t.Errorf("%q: server %q, want %q", tc.input, p.Server, tc.server)
		}
	}
}

// The dns subdirective of the tls directive turns into the provider JSON.
func TestCaddyfileAdapt(t *testing.T) {
	input := "example.test {\n\ttls {\n\t\tdns testdns 127.0.0.1:5353\n\t}\n}\n"
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"provider":{"name":"testdns","server":"127.0.0.1:5353"}`; !strings.Contains(string(out), want) {
		t.Errorf("adapted config lacks %s:\n%s", want, out)
	}
}

func sameRecords(got, want []libdns.Record) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].RR() != want[i].RR() {
			return false
		}
	}
	return true
}
