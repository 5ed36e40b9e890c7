package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/sslci/caddy-sslci/internal/testdns"
	"github.com/sslci/caddy-sslci/internal/testport"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// The README's configs, loaded in a real Caddy as shown, with these
// changes made by the test (and said in the README): the sslci issuers'
// endpoint is a simulator, whose root they trust; the listeners, http_port and https_port are
// free loopback ports; admin, storage and logs are the test's; for the DNS
// example, the Cloudflare provider and the 1.1.1.1 resolver are a loopback
// DNS server. Caddyfiles are loaded like `caddy run` does, the JSON config
// by a POST to the admin API's /load. Each site must then serve a
// certificate that verifies against the simulator's root.
func TestREADMEConfigs(t *testing.T) {
	for _, tc := range []struct {
		file      string
		dns       bool
		finalizes int
		sites     map[string]string // SNI: body
	}{
		{"site.caddyfile", false, 1, map[string]string{"example.com": "Hello over HTTPS, certificate by SSLCI"}},
		{"global.caddyfile", false, 2, map[string]string{
			"example.com":     "Hello from example.com, certificate by SSLCI",
			"www.example.com": "Hello from www.example.com, certificate by SSLCI",
		}},
		{"config.json", false, 1, map[string]string{"example.com": "Hello over HTTPS, certificate by SSLCI"}},
		// Caddy manages the wildcard and the apex as two certificates.
		{"dns.caddyfile", true, 2, map[string]string{
			"foo.example.com": "Hello from foo.example.com, certificate by SSLCI",
			"example.com":     "Hello from example.com, certificate by SSLCI",
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			e := newREADMEEnv(t, tc.dns)
			text := e.readConfig(t, tc.file)
			if strings.HasSuffix(tc.file, ".json") {
				e.postLoad(t, e.rewrite(t, text))
			} else {
				e.load(t, e.rewrite(t, e.adapt(t, text)))
			}
			for sni, want := range tc.sites {
				if body := e.get(t, sni); body != want {
					t.Errorf("https://%s/ = %q, want %q", sni, body, want)
				}
			}
			if n := e.sim.CountRequests(sslcitest.OpFinalize); n != tc.finalizes {
				t.Errorf("%d finalize requests, want %d", n, tc.finalizes)
			}
			if tc.dns && e.dns.Queries() == 0 {
				t.Error("no DNS query: the names were not verified by DNS")
			}
		})
	}
}

// The README's JSON issuer for the DNS method is the issuer the DNS
// Caddyfile example adapts to, so it works as that Caddyfile does.
func TestREADMEDNSIssuerJSON(t *testing.T) {
	e := newREADMEEnv(t, true)
	var fragment any
	if err := json.Unmarshal(e.readConfig(t, "dns-issuer.json"), &fragment); err != nil {
		t.Fatalf("dns-issuer.json: %v", err)
	}
	var adapted struct {
		Apps struct {
			TLS struct {
				Automation struct {
					Policies []struct {
						Issuers []any `json:"issuers"`
					} `json:"policies"`
				} `json:"automation"`
			} `json:"tls"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(e.adapt(t, e.readConfig(t, "dns.caddyfile")), &adapted); err != nil {
		t.Fatal(err)
	}
	policies := adapted.Apps.TLS.Automation.Policies
	if len(policies) != 1 || len(policies[0].Issuers) != 1 {
		t.Fatalf("dns.caddyfile adapts to %+v, want one policy with one issuer", policies)
	}
	e.walk(fragment)
	e.walk(policies[0].Issuers[0])
	if !reflect.DeepEqual(fragment, policies[0].Issuers[0]) {
		t.Errorf("dns-issuer.json is\n%v\nthe DNS Caddyfile's issuer is\n%v", fragment, policies[0].Issuers[0])
	}
}

// readmeEnv is a simulator, maybe a DNS server, and the free ports and
// storage of one in-process Caddy.
type readmeEnv struct {
	sim                            *sslcitest.Server
	dns                            *testdns.Server
	httpPort, httpsPort, adminPort int
	storage                        string
	rootFile                       string // the simulator's root, PEM
}

func newREADMEEnv(t *testing.T, withDNS bool) *readmeEnv {
	e := &readmeEnv{httpPort: testport.Get(t), httpsPort: testport.Get(t), adminPort: testport.Get(t), storage: t.TempDir()}
	opts := sslcitest.Options{HTTPChallengeAddr: e.addr(e.httpPort)}
	if withDNS {
		var err error
		if e.dns, err = testdns.Start("example.com"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.dns.Close)
		opts.DNSServer = e.dns.Addr()
	}
	var err error
	if e.sim, err = sslcitest.NewServer(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.sim.Close)
	e.rootFile = filepath.Join(t.TempDir(), "sslci-sim-root.pem")
	if err := os.WriteFile(e.rootFile, e.sim.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSLCI_TOKEN", e.sim.Token())
	return e
}

func (e *readmeEnv) addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

func (e *readmeEnv) readConfig(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "testdata/readme", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// adapt adapts a Caddyfile; with a DNS server, its provider line and
// resolvers are first replaced by the loopback server's (the Cloudflare
// module is not linked, and the test queries no public resolver).
func (e *readmeEnv) adapt(t *testing.T, caddyfile []byte) []byte {
	t.Helper()
	text := string(caddyfile)
	if e.dns != nil {
		for old, repl := range map[string]string{
			"dns cloudflare {env.CF_API_TOKEN}": "dns testdns " + e.dns.Addr(),
			"resolvers 1.1.1.1":                 "resolvers " + e.dns.Addr(),
		} {
			if !strings.Contains(text, old) {
				t.Fatalf("the DNS Caddyfile has no %q to replace", old)
			}
			text = strings.ReplaceAll(text, old, repl)
		}
	}
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), nil)
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("adapting: %s", w.String())
	}
	return cfg
}

// rewrite makes the changes the README states to a JSON config.
func (e *readmeEnv) rewrite(t *testing.T, cfgJSON []byte) []byte {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg["admin"] = e.admin()
	cfg["storage"] = map[string]any{"module": "file_system", "root": e.storage}
	cfg["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}}
	httpApp, _ := cfg["apps"].(map[string]any)["http"].(map[string]any)
	if httpApp == nil {
		t.Fatal("config has no HTTP app")
	}
	httpApp["http_port"], httpApp["https_port"] = e.httpPort, e.httpsPort
	for name, srv := range httpApp["servers"].(map[string]any) {
		listen := srv.(map[string]any)["listen"].([]any)
		for i, l := range listen {
			switch l {
			case ":443":
				listen[i] = e.addr(e.httpsPort)
			case ":80":
				listen[i] = e.addr(e.httpPort)
			default:
				t.Fatalf("server %s listens on %v: not a port the test moves", name, l)
			}
		}
	}
	e.walk(cfg)
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// walk points every sslci issuer at the simulator, trusting its root, and,
// with a DNS server, the README's Cloudflare provider and 1.1.1.1 resolver
// at it.
func (e *readmeEnv) walk(v any) {
	switch v := v.(type) {
	case map[string]any:
		if v["module"] == "sslci" {
			v["endpoint"] = e.sim.URL()
			v["trusted_roots_pem_files"] = []any{e.rootFile}
		}
		if e.dns != nil && len(v) == 2 && v["name"] == "cloudflare" && v["api_token"] == "{env.CF_API_TOKEN}" {
			clear(v)
			v["name"], v["server"] = "testdns", e.dns.Addr()
		}
		if resolvers, ok := v["resolvers"].([]any); ok && e.dns != nil {
			for i, r := range resolvers {
				if r == "1.1.1.1" {
					resolvers[i] = e.dns.Addr()
				}
			}
		}
		for _, x := range v {
			e.walk(x)
		}
	case []any:
		for _, x := range v {
			e.walk(x)
		}
	}
}

func (e *readmeEnv) admin() map[string]any {
	return map[string]any{"listen": e.addr(e.adminPort), "config": map[string]any{"persist": false}}
}

func (e *readmeEnv) load(t *testing.T, cfg []byte) {
	t.Helper()
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading: %v", err)
	}
	t.Cleanup(func() { caddy.Stop() }) //nolint:errcheck
}

// postLoad starts a Caddy with only the admin API, then POSTs cfg to /load.
func (e *readmeEnv) postLoad(t *testing.T, cfg []byte) {
	t.Helper()
	initial, _ := json.Marshal(map[string]any{"admin": e.admin()})
	e.load(t, initial)
	resp, err := http.Post("http://"+e.addr(e.adminPort)+"/load", "application/json", bytes.NewReader(cfg))
	if err != nil {
		t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /load: %s %s", resp.Status, body)
	}
}

// get waits until Caddy serves name a certificate that verifies against
// the simulator's root, then returns the body of https://name/.
func (e *readmeEnv) get(t *testing.T, name string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.sim.RootPool()},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, e.addr(e.httpsPort))
		},
	}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := client.Get("https://" + name + "/")
		if err == nil {
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			return string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no verified certificate for %s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort(t *testing.T) int { return testport.Get(t) }
