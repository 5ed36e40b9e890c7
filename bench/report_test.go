package main

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

func testResults() *results {
	run := func(iss string, n int, s float64) issuance {
		return issuance{Issuer: iss, Names: n, Seconds: s, API: snapshot{Requests: 3 * n, Conns: 1}, PeakKiB: 50 << 10}
	}
	return &results{
		Issuance: []issuance{
			run(issuerACME, 1, 0.9), run(issuerACME, 1, 0.56), run(issuerACME, 1, 0.5),
			run(issuerSSLCI, 1, 0.041), run(issuerSSLCI, 10, 0.105), run(issuerSSLCI, 1000, 3.9),
		},
		Skipped: []skipped{{Issuer: issuerACME, Names: 1000, Reason: "not run (-acme-max 100): about 1000 s"}},
		Renewal: []renewal{{Issuer: issuerSSLCI, Seconds: 0.02, API: snapshot{Requests: 1, Conns: 1, ByKind: map[string]int{"finalize": 1}}}},
	}
}

func TestMarkdownTable(t *testing.T) {
	md := testResults().markdown()
	for _, row := range []string{
		"| names | ACME + Pebble | sslci + simulator |",
		"| 1 | 0.560 s | 0.041 s |", // the median of three ACME runs
		"| 10 | | 0.105 s |",
		"| 1000 | not run (-acme-max 100): about 1000 s | 3.90 s |",
		"| sslci + simulator | 1000 | 3000 | 3.0 | 1 | 0.00 s | 50 MiB |",
		"| sslci + simulator | 0.020 s | 1 | 1 | finalize ×1 |",
		"median of 3 runs",
	} {
		if !strings.Contains(md, row) {
			t.Errorf("results.md lacks %q:\n%s", row, md)
		}
	}
}

func TestSVGIsWellFormed(t *testing.T) {
	svg := testResults().svg()
	dec := xml.NewDecoder(strings.NewReader(svg))
	lines := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("results.svg is not well-formed XML: %v\n%s", err, svg)
		}
		if el, ok := tok.(xml.StartElement); ok && el.Name.Local == "polyline" {
			lines++
		}
	}
	if lines != 2 {
		t.Errorf("results.svg has %d lines, want one per issuer", lines)
	}
	for _, text := range []string{"0.560 s", "3.90 s", "1000 names: not run (-acme-max 100)</text>"} {
		if !strings.Contains(svg, text) {
			t.Errorf("results.svg lacks %q", text)
		}
	}
}
