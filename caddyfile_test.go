package sslci_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	_ "github.com/sslci/caddy-sslci/internal/testdns"
)

var update = flag.Bool("update", false, "rewrite the expected JSON of the Caddyfile adapt cases in testdata")

// Each file in testdata/caddyfile_adapt is a Caddyfile, a line of dashes,
// and the JSON it must adapt to (as Caddy's own caddyfile_adapt tests).
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt cases: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(data), "----------\n")
			if !ok {
				t.Fatalf("%s: no ---------- separator", file)
			}
			got, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings: %v", warnings)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "\t"); err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(file, []byte(input+"----------\n"+pretty.String()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			var want bytes.Buffer
			if err := json.Compact(&want, []byte(expected)); err != nil {
				t.Fatalf("expected JSON does not parse: %v", err)
			}
			if !bytes.Equal(want.Bytes(), got) {
				t.Errorf("adapted JSON differs\n got: %s\nwant: %s", pretty.String(), expected)
			}
		})
	}
}

// Syntax errors in the issuer's Caddyfile block name the problem and its
// line. (What the values mean is checked by Provision: TestProvisionErrors.)
func TestCaddyfileErrors(t *testing.T) {
	cases := []struct {
		name, block string
		want        []string
	}{
		{"unknown subdirective", "issuer sslci T {\n\t\t\tfrobnicate yes\n\t\t}", []string{"unrecognized sslci issuer subdirective", "Caddyfile:4"}},
		{"repeated subdirective", "issuer sslci T {\n\t\t\tendpoint https://a.example/api\n\t\t\tendpoint https://b.example/api\n\t\t}", []string{"endpoint is already set", "Caddyfile:5"}},
		{"missing argument", "issuer sslci T {\n\t\t\tendpoint\n\t\t}", []string{"wrong argument count", "Caddyfile:4"}},
		{"two tokens", "issuer sslci T U", []string{"the token takes exactly one argument", "Caddyfile:3"}},
		{"token twice", "issuer sslci T {\n\t\t\ttoken U\n\t\t}", []string{"token is already set", "Caddyfile:4"}},
		{"bad duration", "issuer sslci T {\n\t\t\ttimeout soon\n\t\t}", []string{`invalid duration "soon"`, "Caddyfile:4"}},
		{"bad port", "issuer sslci T {\n\t\t\talt_http_port eighty\n\t\t}", []string{`invalid port "eighty": not a number`, "Caddyfile:4"}},
		{"dns without provider", "issuer sslci T {\n\t\t\tdns\n\t\t}", []string{"dns needs a provider name", "Caddyfile:4"}},
		{"unknown dns provider", "issuer sslci T {\n\t\t\tdns nosuchprovider\n\t\t}", []string{"dns.providers.nosuchprovider"}},
		{"dns provider missing arguments", "issuer sslci T {\n\t\t\tdns testdns\n\t\t}", []string{"missing server address", "Caddyfile:4"}},
		{"trusted_roots without files", "issuer sslci T {\n\t\t\ttrusted_roots\n\t\t}", []string{"wrong argument count", "Caddyfile:4"}},
		{"delete_replaced with an argument", "issuer sslci T {\n\t\t\tdelete_replaced yes\n\t\t}", []string{"wrong argument count", "Caddyfile:4"}},
		{"resolvers without servers", "issuer sslci T {\n\t\t\tresolvers\n\t\t}", []string{"wrong argument count", "Caddyfile:4"}},
		{"network_proxy without module", "issuer sslci T {\n\t\t\tnetwork_proxy\n\t\t}", []string{"network_proxy needs a module name", "Caddyfile:4"}},
		{"unknown network_proxy module", "issuer sslci T {\n\t\t\tnetwork_proxy socks\n\t\t}", []string{"caddy.network_proxy.socks"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := adaptSiteTLS(tc.block)
			if err == nil {
				t.Fatalf("adapting succeeded:\n%s", tc.block)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

// A literal token misplaced in the block is never shown in an error: not
// with extra arguments, nor alone on its line (read as a subdirective).
func TestCaddyfileErrorsHideTheToken(t *testing.T) {
	const secret = "SECRET0123456789"
	for name, block := range map[string]string{
		"issuer argument and more": "issuer sslci " + secret + " extra",
		"token and more":           "issuer sslci {\n\t\t\ttoken " + secret + " extra\n\t\t}",
		"token alone on a line":    "issuer sslci {\n\t\t\t" + secret + "\n\t\t}",
		"token and more args":      "issuer sslci {\n\t\t\t" + secret + " more args\n\t\t}",
	} {
		t.Run(name, func(t *testing.T) {
			err := adaptSiteTLS(block)
			if err == nil {
				t.Fatalf("adapting succeeded:\n%s", block)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "extra") {
				t.Errorf("the error shows the token or its arguments: %v", err)
			}
			if !strings.Contains(err.Error(), "Caddyfile:") {
				t.Errorf("the error does not name the line: %v", err)
			}
		})
	}
}

// adaptSiteTLS adapts a site whose tls directive holds block.
func adaptSiteTLS(block string) error {
	input := "example.com {\n\ttls {\n\t\t" + block + "\n\t}\n}\n"
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	return err
}
