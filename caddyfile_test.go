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

// Errors in the issuer's Caddyfile block name the problem and its line.
func TestCaddyfileErrors(t *testing.T) {
	site := func(block string) string {
		return "example.com {\n\ttls {\n\t\t" + block + "\n\t}\n}\n"
	}
	cases := []struct {
		name, input string
		want        []string
	}{
		{"unknown subdirective", site("issuer sslci T {\n\t\t\tfrobnicate yes\n\t\t}"), []string{`unrecognized sslci issuer subdirective "frobnicate"`, "Caddyfile:4"}},
		{"repeated subdirective", site("issuer sslci T {\n\t\t\tendpoint https://a.example/api\n\t\t\tendpoint https://b.example/api\n\t\t}"), []string{"endpoint is already set", "Caddyfile:5"}},
		{"missing argument", site("issuer sslci T {\n\t\t\tendpoint\n\t\t}"), []string{"wrong argument count", "Caddyfile:4"}},
		{"two tokens", site("issuer sslci T U"), []string{"wrong argument count", "Caddyfile:3"}},
		{"token twice", site("issuer sslci T {\n\t\t\ttoken U\n\t\t}"), []string{"token is already set", "Caddyfile:4"}},
		{"unknown method", site("issuer sslci T {\n\t\t\tmethod ftp\n\t\t}"), []string{`unknown method "ftp"`, "Caddyfile:4"}},
		{"bad duration", site("issuer sslci T {\n\t\t\ttimeout soon\n\t\t}"), []string{`invalid duration "soon"`}},
		{"negative duration", site("issuer sslci T {\n\t\t\tverification_timeout -1s\n\t\t}"), []string{"must not be negative"}},
		{"bad port", site("issuer sslci T {\n\t\t\talt_http_port eighty\n\t\t}"), []string{`invalid port "eighty"`}},
		{"dns without provider", site("issuer sslci T {\n\t\t\tdns\n\t\t}"), []string{"dns needs a provider name", "Caddyfile:4"}},
		{"unknown dns provider", site("issuer sslci T {\n\t\t\tdns nosuchprovider\n\t\t}"), []string{"dns.providers.nosuchprovider"}},
		{"dns provider missing arguments", site("issuer sslci T {\n\t\t\tdns testdns\n\t\t}"), []string{"missing server address", "Caddyfile:4"}},
		{"dns with method http", site("issuer sslci T {\n\t\t\tmethod http\n\t\t\tdns testdns 127.0.0.1:53\n\t\t}"), []string{"method http cannot be combined"}},
		{"resolvers without servers", site("issuer sslci T {\n\t\t\tresolvers\n\t\t}"), []string{"wrong argument count"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tc.input), map[string]any{"filename": "Caddyfile"})
			if err == nil {
				t.Fatalf("adapting succeeded:\n%s", tc.input)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}
