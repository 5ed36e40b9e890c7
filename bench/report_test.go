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
		return issuance{Issuer: iss, Names: n, Seconds: s, API: snapshot{Requests: 3 * n, Conns: 1}, PeakKiB: 50 << 10,
			CPUSeconds: 2 * s, BenchCPUSeconds: s / 2}
	}
	internal := func(n int, s float64) issuance {
		return issuance{Issuer: issuerInternal, Names: n, Seconds: s, PeakKiB: 40 << 10, CPUSeconds: s, BenchCPUSeconds: 0.01}
	}
	sslciKinds := func(n int) snapshot {
		return snapshot{Requests: n, Conns: 1, ByKind: map[string]int{"list": n}}
	}
	return &results{
		Issuance: []issuance{
			run(issuerACME, 1, 0.9), run(issuerACME, 1, 0.56), run(issuerACME, 1, 0.5),
			run(issuerSSLCI, 1, 0.041), run(issuerSSLCI, 10, 0.105), run(issuerSSLCI, 1000, 3.9),
			internal(1, 0.05), internal(1, 0.02), internal(1, 0.03), internal(1000, 3),
		},
		Skipped: []skipped{{Issuer: issuerACME, Names: 1000, Reason: "not run (-acme-max 100): about 1000 s"}},
		Renewal: []renewal{
			{Issuer: issuerInternal, Seconds: 0.01},
			{Issuer: issuerSSLCI, Seconds: 0.02, API: snapshot{Requests: 1, Conns: 1, ByKind: map[string]int{"finalize": 1}}},
		},
		Restart: []restart{
			{Issuer: issuerInternal, Names: 1000, Seconds: 1.2},
			{Issuer: issuerSSLCI, Names: 1000, Seconds: 1.5, API: sslciKinds(1)},
			{Issuer: issuerInternal, Names: 1000, Seconds: 1.0},
			{Issuer: issuerSSLCI, Names: 1000, Seconds: 2.5, API: sslciKinds(2)},
			{Issuer: issuerInternal, Names: 1000, Seconds: 0.8},
			{Issuer: issuerSSLCI, Names: 1000, Seconds: 1.8, API: sslciKinds(3), SweepSeen: true, SweepSeconds: 61.2,
				Sweep: &snapshot{Requests: 4, ByKind: map[string]int{"list": 4}}},
		},
	}
}

func TestMarkdownTable(t *testing.T) {
	md := testResults().markdown()
	for _, row := range []string{
		"| names | Caddy's internal CA | sslci + simulator | sslci / internal | each turn | Caddy CPU, sslci / internal | ACME + Pebble |",
		// the medians of three runs, their ratio; the one turn with both
		// issuers (sslci ran once) and its ratio of Caddy's CPU
		"| 1 | 0.030 s | 0.041 s | 1.37× |  | 1.64× | 0.560 s |",
		"| 10 | | 0.105 s | | | | |",
		"| 1000 | 3.00 s | 3.90 s | 1.30× |  | 2.60× | not run (-acme-max 100): about 1000 s |",
		"| Caddy CPU | simulator CPU | Caddy peak RSS |",
		"a real SSLCI (or Let's Encrypt) does on its own machines",
		"| sslci + simulator | 1000 | 3000 | 3.0 | 1 | 7.80 s | 1.95 s | 50 MiB |",
		"| Caddy's internal CA | 1000 | 0 | 0.0 | 0 | 3.00 s | 0.01 s | 40 MiB |",
		"| issuer | names | time to serve every name | sslci / internal | API requests | requests |",
		"| Caddy's internal CA | 1000 | 1.00 s |  | 0 |  |", // the median restart
		"| sslci + simulator | 1000 | 1.80 s | 1.80× | 3 | list ×3 |",
		"Until the sweep of sslci + simulator (-restart-sweep; it runs a minute after the start): 4 (list ×4) API requests from Caddy's start; the sweep's list and a quiet second after it came 61 s after the config load.",
		"| Caddy's internal CA | 0.010 s | 0 | 0 |  |",
		"| sslci + simulator | 0.020 s | 1 | 1 | finalize ×1 |",
		"Each figure is one run (3 for 1 name), the issuers taking turns in each.",
	} {
		if !strings.Contains(md, row) {
			t.Errorf("results.md lacks %q:\n%s", row, md)
		}
	}
}

func TestMarkdownOneRun(t *testing.T) {
	r := &results{Issuance: []issuance{{Issuer: issuerInternal, Names: 1, Seconds: 0.1}, {Issuer: issuerSSLCI, Names: 1, Seconds: 0.12}}}
	md := r.markdown()
	for _, row := range []string{"Each figure is one run.", "| 1 | 0.100 s | 0.120 s | 1.20× |"} {
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
	if lines != 3 {
		t.Errorf("results.svg has %d lines, want one per issuer", lines)
	}
	for _, text := range []string{"0.560 s", "3.90 s", "0.030 s", ">Caddy's internal CA</text>", "1000 names: not run (-acme-max 100)</text>"} {
		if !strings.Contains(svg, text) {
			t.Errorf("results.svg lacks %q", text)
		}
	}
}

// The turns' ratios are paired run by run, in the order the issuers took
// turns, not from the medians.
func TestMarkdownTurns(t *testing.T) {
	r := &results{}
	for i, s := range [][2]float64{{1, 2}, {2, 3}, {1.5, 4.5}} {
		r.Issuance = append(r.Issuance,
			issuance{Issuer: issuerInternal, Names: 100, Seconds: s[0], CPUSeconds: s[0]},
			issuance{Issuer: issuerSSLCI, Names: 100, Seconds: s[1], CPUSeconds: s[1] * float64(i+1)})
	}
	md := r.markdown()
	// medians 1.5 s and 3 s; turns 2×, 1.5×, 3×; CPU 2×, 3×, 9×
	if row := "| 100 | 1.50 s | 3.00 s | 2.00× | 1.50–3.00× | 3.00× |"; !strings.Contains(md, row) {
		t.Errorf("results.md lacks %q:\n%s", row, md)
	}
}

// The runs said: the largest size's count, and the sizes that had another.
func TestRunsSaid(t *testing.T) {
	runs := func(counts map[int]int) *results {
		r := &results{}
		for n, c := range counts {
			for range c {
				r.Issuance = append(r.Issuance, issuance{Issuer: issuerInternal, Names: n}, issuance{Issuer: issuerSSLCI, Names: n})
			}
		}
		return r
	}
	for _, tc := range []struct {
		counts map[int]int
		want   string
	}{
		{map[int]int{1: 5, 1000: 5}, "Each figure is the median of 5 runs, the issuers taking turns in each."},
		{map[int]int{1: 15, 10: 15, 100: 5, 1000: 5}, "Each figure is the median of 5 runs (15 for 1 and 10 names), the issuers taking turns in each."},
		{map[int]int{1: 3, 1000: 1}, "Each figure is one run (3 for 1 name), the issuers taking turns in each."},
		{map[int]int{10000: 1}, "Each figure is one run."},
	} {
		if got := runs(tc.counts).runsSaid(); got != tc.want {
			t.Errorf("runsSaid(%v) = %q, want %q", tc.counts, got, tc.want)
		}
	}
}
