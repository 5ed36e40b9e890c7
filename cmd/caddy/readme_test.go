package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the checkout, seen from this package's directory.
const repoRoot = "../.."

// block is a fenced code block of the README.
type block struct {
	lang   string
	file   string // from a "<!-- file: path -->" line right above the fence
	body   string
	line   int
	header string // the "## " section it is in
}

var fileMarker = regexp.MustCompile(`^<!-- file: (\S+) -->$`)

func readme(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// codeBlocks returns the README's fenced blocks in order.
func codeBlocks(t *testing.T, md string) []block {
	t.Helper()
	var blocks []block
	var cur *block
	var prev, header string
	for i, line := range strings.SplitAfter(md, "\n") {
		trimmed := strings.TrimRight(line, "\n")
		switch {
		case cur != nil && trimmed == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.body += line
		case strings.HasPrefix(trimmed, "```"):
			cur = &block{lang: strings.TrimPrefix(trimmed, "```"), line: i + 1, header: header}
			if m := fileMarker.FindStringSubmatch(prev); m != nil {
				cur.file = m[1]
			}
		case strings.HasPrefix(trimmed, "## "):
			header = strings.TrimPrefix(trimmed, "## ")
		}
		prev = trimmed
	}
	if cur != nil {
		t.Fatalf("README: the block at line %d is not closed", cur.line)
	}
	return blocks
}

// sectionBlocks returns the blocks of one "## " section in the given language.
func sectionBlocks(t *testing.T, header, lang string) []block {
	t.Helper()
	var out []block
	for _, b := range codeBlocks(t, readme(t)) {
		if b.header == header && b.lang == lang {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		t.Fatalf("README: no %s block in section %q", lang, header)
	}
	return out
}

// configLangs are the languages of the README's blocks that are configs:
// Caddy's, and the Prometheus alerting rules.
var configLangs = []string{"caddyfile", "json", "yaml"}

// Every config the README shows is a file under testdata/readme, shown
// byte for byte, so that the tests that load those files test the README.
func TestREADMEConfigsAreFiles(t *testing.T) {
	var shown []string
	for _, b := range codeBlocks(t, readme(t)) {
		if !slices.Contains(configLangs, b.lang) {
			continue
		}
		if b.file == "" {
			t.Errorf("README line %d: a %s block without a <!-- file: testdata/readme/... --> line above it", b.line, b.lang)
			continue
		}
		data, err := os.ReadFile(filepath.Join(repoRoot, b.file))
		if err != nil {
			t.Errorf("README line %d: %v", b.line, err)
			continue
		}
		if string(data) != b.body {
			t.Errorf("README line %d differs from %s:\nREADME:\n%s\nfile:\n%s", b.line, b.file, b.body, data)
		}
		shown = append(shown, b.file)
	}
	files, err := filepath.Glob(filepath.Join(repoRoot, "testdata/readme/*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(repoRoot, f)
		if !slices.Contains(shown, filepath.ToSlash(rel)) {
			t.Errorf("%s is not shown in the README", rel)
		}
	}
	for _, f := range shown {
		if !slices.Contains(testedConfigs, f) {
			t.Errorf("%s is shown in the README but no test loads it (add it to testedConfigs and test it)", f)
		}
	}
}

// testedConfigs are the README's configs that a test loads: one of this
// package, unless the comment names another.
var testedConfigs = []string{
	"testdata/readme/site.caddyfile",      // TestREADMEConfigs
	"testdata/readme/global.caddyfile",    // TestREADMEConfigs
	"testdata/readme/config.json",         // TestREADMEConfigs
	"testdata/readme/dns.caddyfile",       // TestREADMEConfigs
	"testdata/readme/dns-issuer.json",     // TestREADMEDNSIssuerJSON
	"testdata/readme/simulator.caddyfile", // TestTryItWithTheSimulator
	"testdata/readme/alerts.yaml",         // TestREADMEAlertingRules, in the root package
}

// The Install section names the Go and Caddy versions go.mod requires, and
// builds that Caddy version. .ci/run runs the section's commands themselves.
func TestREADMEInstallVersions(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	caddyVersion := regexp.MustCompile(`(?m)^\s+github.com/caddyserver/caddy/v2 (v\S+)$`).FindSubmatch(gomod)
	if goVersion == nil || caddyVersion == nil {
		t.Fatalf("go.mod: no go directive or no Caddy requirement")
	}
	install := strings.Join(func() []string {
		var s []string
		for _, b := range sectionBlocks(t, "Install", "sh") {
			s = append(s, b.body)
		}
		return s
	}(), "")
	for _, want := range []string{
		"xcaddy build " + string(caddyVersion[1]) + " --with github.com/sslci/caddy-sslci@v0.0.0=/path/to/caddy-sslci\n",
		"go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5\n",
	} {
		if !strings.Contains(install, want) {
			t.Errorf("README Install commands lack %q:\n%s", want, install)
		}
	}
	md := readme(t)
	start := strings.Index(md, "\n## Install\n")
	end := strings.Index(md, "\n## Configure\n")
	if start < 0 || end < start {
		t.Fatal("README: no Install section before Configure")
	}
	for _, want := range []string{"Go " + string(goVersion[1]), "Caddy " + string(caddyVersion[1])} {
		if !strings.Contains(md[start:end], want) {
			t.Errorf("README Install does not say %q", want)
		}
	}
	ci, err := os.ReadFile(filepath.Join(repoRoot, ".ci/run"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), `section_block "## Install"`) {
		t.Error(".ci/run does not run the README's Install commands")
	}
}
