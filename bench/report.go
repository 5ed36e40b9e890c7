package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// issuerTitle is how the tables and the plot name each side.
var issuerTitle = map[string]string{issuerACME: "ACME + Pebble", issuerSSLCI: "sslci + simulator"}

func (r *results) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"results.json": append(data, '\n'),
		"results.md":   []byte(r.markdown()),
		"results.svg":  []byte(r.svg()),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// issuersRun are the issuers in the results, ACME first.
func (r *results) issuersRun() []string {
	var out []string
	for _, iss := range []string{issuerACME, issuerSSLCI} {
		if slices.ContainsFunc(r.Issuance, func(x issuance) bool { return x.Issuer == iss }) ||
			slices.ContainsFunc(r.Skipped, func(x skipped) bool { return x.Issuer == iss }) {
			out = append(out, iss)
		}
	}
	return out
}

func (r *results) sizes() []int {
	var sizes []int
	for _, x := range r.Issuance {
		sizes = append(sizes, x.Names)
	}
	for _, x := range r.Skipped {
		sizes = append(sizes, x.Names)
	}
	slices.Sort(sizes)
	return slices.Compact(sizes)
}

// find is the median run of iss for n names, by time.
func (r *results) find(iss string, n int) (issuance, bool) {
	var runs []issuance
	for _, x := range r.Issuance {
		if x.Issuer == iss && x.Names == n {
			runs = append(runs, x)
		}
	}
	if len(runs) == 0 {
		return issuance{}, false
	}
	slices.SortFunc(runs, func(a, b issuance) int { return cmp.Compare(a.Seconds, b.Seconds) })
	return runs[len(runs)/2], true
}

// maxRuns is the most runs of one issuer and size.
func (r *results) maxRuns() int {
	type run struct {
		issuer string
		names  int
	}
	runs := map[run]int{}
	most := 0
	for _, x := range r.Issuance {
		k := run{x.Issuer, x.Names}
		runs[k]++
		most = max(most, runs[k])
	}
	return most
}

func (r *results) markdown() string {
	var b strings.Builder
	issuers := r.issuersRun()
	fmt.Fprintf(&b, "Measured %s on %d CPUs (%s, %s, load average %s at start, %s at the end of the issuance runs), "+
		"%s with both issuers, Pebble %s; everything on loopback. Each figure is the median of %d runs.\n\n",
		r.Date, r.CPUs, r.OS, r.Go, r.LoadStart, r.LoadEnd, r.Caddy, r.Pebble, r.maxRuns())

	b.WriteString("Time for Caddy to obtain certificates for N new names (config load to the last certificate in storage):\n\n| names |")
	for _, iss := range issuers {
		fmt.Fprintf(&b, " %s |", issuerTitle[iss])
	}
	b.WriteString("\n|---:|" + strings.Repeat("---:|", len(issuers)) + "\n")
	for _, n := range r.sizes() {
		fmt.Fprintf(&b, "| %d |", n)
		for _, iss := range issuers {
			if x, ok := r.find(iss, n); ok {
				fmt.Fprintf(&b, " %s |", seconds(x.Seconds))
			} else if i := slices.IndexFunc(r.Skipped, func(s skipped) bool { return s.Issuer == iss && s.Names == n }); i >= 0 {
				fmt.Fprintf(&b, " %s |", r.Skipped[i].Reason)
			} else {
				b.WriteString(" |")
			}
		}
		b.WriteString("\n")
	}

	b.WriteString("\nAPI traffic and memory of each run (requests and connections counted by the benchmark's listener in front of the CA):\n\n")
	b.WriteString("| issuer | names | API requests | per certificate | TCP connections | Caddy CPU | Caddy peak RSS |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, iss := range issuers {
		for _, n := range r.sizes() {
			if x, ok := r.find(iss, n); ok {
				fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %d | %.2f s | %d MiB |\n", issuerTitle[iss], x.Names, x.API.Requests,
					float64(x.API.Requests)/float64(x.Names), x.API.Conns, x.CPUSeconds, (x.PeakKiB+512)/1024)
			}
		}
	}

	if len(r.OnDemand) > 0 {
		b.WriteString("\nOn-demand TLS, the first handshake for a new name (the client waits for the certificate):\n\n")
		b.WriteString("| issuer | first new name after start | next new names (median) | API requests per certificate |\n|---|---:|---:|---:|\n")
		for _, x := range r.OnDemand {
			fmt.Fprintf(&b, "| %s | %.0f ms | %.0f ms | %.1f |\n", issuerTitle[x.Issuer], x.FirstMs, x.NextMs,
				float64(x.API.Requests)/float64(x.Names))
		}
	}

	b.WriteString("\nOne renewal of a one-name certificate (a restarted Caddy finds it due), until the renewed certificate is served:\n\n")
	b.WriteString("| issuer | time | API requests | TCP connections | requests |\n|---|---:|---:|---:|---|\n")
	for _, x := range r.Renewal {
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %s |\n", issuerTitle[x.Issuer], seconds(x.Seconds), x.API.Requests,
			x.API.Conns, kinds(x.API.ByKind))
	}
	return b.String()
}

// seconds keeps about two significant digits, three below a second.
func seconds(s float64) string {
	switch {
	case s < 1:
		return fmt.Sprintf("%.3f s", s)
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	default:
		return fmt.Sprintf("%.1f s", s)
	}
}

// kinds lists request counts by kind, most frequent first.
func kinds(m map[string]int) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
