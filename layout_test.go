package sslci_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// Imports run one way: cmd -> the Caddy module (root) -> internal/issuance
// -> internal/ledger -> api. The engine below the root knows nothing of
// Caddy's modules, and api nothing of Caddy or certmagic, so that each can
// be read, tested and used without them. A package of this module may
// import only the packages listed for it here; a new package must be
// added to the list.
func TestImportsRunOneWay(t *testing.T) {
	const mod = "github.com/sslci/caddy-sslci"
	allowed := map[string][]string{
		"":                   {"api", "internal/issuance", "internal/ledger", "internal/dnsverify"},
		"internal/issuance":  {"api", "internal/ledger"},
		"internal/ledger":    {"api"},
		"api":                {},
		"sslcitest":          {},
		"internal/dnsverify": {"internal/dnstxt"},
		"internal/dnstxt":    {},
		"internal/testdns":   {"internal/dnstxt"},
		"internal/testport":  {},
		"cmd/caddy":          {""},
		"cmd/sslci-sim":      {"sslcitest"},
		"cmd/sslci-demo":     {"", "sslcitest", "internal/testdns"},
	}
	// Below the root, no Caddy module machinery; api, not even certmagic.
	forbidden := map[string][]string{
		"internal/issuance": {"github.com/caddyserver/caddy/"},
		"internal/ledger":   {"github.com/caddyserver/caddy/"},
		"api":               {"github.com/caddyserver/"},
	}

	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Env = userEnv
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			ImportPath string
			Deps       []string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, mod), "/")
		want, known := allowed[rel]
		if !known {
			t.Errorf("package %q is not in this test's layout: add it, with what it may import", p.ImportPath)
			continue
		}
		seen++
		for _, imp := range p.Imports {
			if imp == mod || strings.HasPrefix(imp, mod+"/") {
				if r := strings.TrimPrefix(strings.TrimPrefix(imp, mod), "/"); !slices.Contains(want, r) {
					t.Errorf("%s imports %s: against the layout (it may import %q)", p.ImportPath, imp, want)
				}
			}
		}
		for _, dep := range p.Deps {
			for _, prefix := range forbidden[rel] {
				if strings.HasPrefix(dep, prefix) {
					t.Errorf("%s depends on %s: the engine below the Caddy module must not", p.ImportPath, dep)
				}
			}
		}
	}
	if seen < len(allowed) {
		t.Errorf("go list found %d of the %d packages of the layout", seen, len(allowed))
	}
}
