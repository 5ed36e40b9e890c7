package sslci_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	sslci "github.com/sslci/caddy-sslci"
)

const provisionToken = "provision-token-0123456789"

// A config that cannot work is refused by Provision, whether it came from
// JSON or from the Caddyfile, with an error that names the problem, starts
// with "sslci: " once and never shows the token.
func TestProvisionErrors(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	cases := []struct {
		name      string
		json      map[string]any // issuer fields over a valid token and endpoint
		caddyfile string         // or an issuer block, parsed by UnmarshalCaddyfile
		want      string
	}{
		{name: "empty token", json: map[string]any{"token": ""}, want: "token is empty"},
		{name: "unset placeholder", json: map[string]any{"token": "{env.SSLCI_TEST_UNSET_VARIABLE}"}, want: "placeholder"},
		{name: "token like a placeholder", json: map[string]any{"token": "secret{weird}token"}, want: "placeholder"},
		{name: "http endpoint", json: map[string]any{"endpoint": "http://www.sslci.com/api"}, want: "plain http is allowed only for loopback"},
		{name: "endpoint with a query", json: map[string]any{"endpoint": "https://www.sslci.com/api?token=x"}, want: "endpoint"},
		{name: "unknown method", json: map[string]any{"method": "email"}, want: `unknown method "email"`},
		{name: "dns without provider", json: map[string]any{"method": "dns"}, want: "needs a DNS provider"},
		{name: "http and dns", json: map[string]any{"method": "http", "dns": map[string]any{"provider": map[string]any{"name": "testdns", "server": "127.0.0.1:1"}}}, want: "method is http but a DNS challenge"},
		{name: "unknown provider", json: map[string]any{"dns": map[string]any{"provider": map[string]any{"name": "nosuch"}}}, want: "dns.providers.nosuch"},
		{name: "unknown network proxy", json: map[string]any{"network_proxy": map[string]any{"from": "nosuch"}}, want: "sslci: loading the network_proxy module"},
		{name: "negative timeout", json: map[string]any{"timeout": "-1s"}, want: "must not be negative"},
		{name: "port out of range", json: map[string]any{"alternate_http_port": 70000}, want: "alternate_http_port 70000 is not a port"},
		{name: "trusted root file missing", json: map[string]any{"trusted_roots_pem_files": []string{"testdata/no-such-root.pem"}}, want: "trusted_roots: open testdata/no-such-root.pem"},
		{name: "trusted root file not PEM", json: map[string]any{"trusted_roots_pem_files": []string{"go.mod"}}, want: "trusted_roots: go.mod holds no PEM certificate"},
		{name: "Caddyfile unknown method", caddyfile: "method ftp", want: `unknown method "ftp"`},
		{name: "Caddyfile negative duration", caddyfile: "verification_timeout -1s", want: "must not be negative"},
		{name: "Caddyfile negative TTL", caddyfile: "dns testdns 127.0.0.1:1\ndns_ttl -1", want: "dns_ttl and propagation_delay must not be negative"},
		{name: "Caddyfile http with dns", caddyfile: "method http\ndns testdns 127.0.0.1:1", want: "method is http but a DNS challenge"},
		{name: "Caddyfile port out of range", caddyfile: "alt_http_port 70000", want: "alternate_http_port 70000 is not a port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			iss, err := configuredIssuer(tc.json, tc.caddyfile)
			if err == nil {
				err = iss.Provision(ctx)
			}
			if err == nil {
				t.Fatal("the config was accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not say %q", msg, tc.want)
			}
			if strings.Count(msg, "sslci: ") > 1 {
				t.Errorf("error %q says sslci: more than once", msg)
			}
			if strings.Contains(msg, provisionToken) || strings.Contains(msg, "weird") {
				t.Errorf("error %q shows the token", msg)
			}
		})
	}
}

// configuredIssuer is an issuer as Caddy makes it from JSON (fields over a
// literal token and a loopback endpoint), or from an issuer block's body.
func configuredIssuer(fields map[string]any, block string) (*sslci.Issuer, error) {
	iss := new(sslci.Issuer)
	if block != "" {
		d := caddyfile.NewTestDispenser("sslci " + provisionToken + " {\nendpoint http://127.0.0.1:1/api\n" + block + "\n}")
		return iss, iss.UnmarshalCaddyfile(d)
	}
	cfg := map[string]any{"token": provisionToken, "endpoint": "http://127.0.0.1:1/api"}
	for k, v := range fields {
		cfg[k] = v
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	return iss, json.Unmarshal(data, iss)
}
