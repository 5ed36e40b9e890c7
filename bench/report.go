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
var issuerTitle = map[string]string{
	issuerInternal: "Caddy's internal CA",
	issuerSSLCI:    "sslci + simulator",
	issuerACME:     "ACME + Pebble",
}

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

// issuersRun are the issuers in the results, in allIssuers' order.
func (r *results) issuersRun() []string {
	var out []string
	for _, iss := range allIssuers {
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

// findRestart is the median restart of iss, by time.
func (r *results) findRestart(iss string) (restart, bool) {
	var runs []restart
	for _, x := range r.Restart {
		if x.Issuer == iss {
			runs = append(runs, x)
		}
	}
	if len(runs) == 0 {
		return restart{}, false
	}
	slices.SortFunc(runs, func(a, b restart) int { return cmp.Compare(a.Seconds, b.Seconds) })
	return runs[len(runs)/2], true
}

// runsBySize is the most runs of one issuer at each size.
func (r *results) runsBySize() map[int]int {
	type run struct {
		issuer string
		names  int
	}
	runs := map[run]int{}
	most := map[int]int{}
	for _, x := range r.Issuance {
		k := run{x.Issuer, x.Names}
		runs[k]++
		most[x.Names] = max(most[x.Names], runs[k])
	}
	return most
}

func (r *results) markdown() string {
	var b strings.Builder
	issuers := r.issuersRun()
	floor := slices.Contains(issuers, issuerInternal) && slices.Contains(issuers, issuerSSLCI)
	fmt.Fprintf(&b, "Measured %s on %d CPUs (%s, %s, load average %s at start, %s at the end of the issuance runs), "+
		"%s (its internal CA, the sslci issuer and its ACME issuer in one binary), Pebble %s; everything on loopback. "+
		"%s\n\n", r.Date, r.CPUs, r.OS, r.Go, r.LoadStart, r.LoadEnd, r.Caddy, r.Pebble, r.runsSaid())
	if r.Pinned != "" {
		fmt.Fprintf(&b, "With -pin: %s, so that the CA's work does not share Caddy's CPUs, as a real SSLCI's or Let's Encrypt's would not.\n\n", r.Pinned)
	}

	b.WriteString("Time for Caddy to obtain certificates for N new names (config load to the last certificate in storage)")
	if floor {
		b.WriteString("; Caddy's internal CA signs in Caddy's process, without network or API, so its time is certmagic's own work. " +
			"Each turn runs the internal CA and then sslci; \"each turn\" is the lowest and highest of the turns' time ratios " +
			"(the machine's speed drifts between turns), and the CPU ratio is the median of the turns' ratios of Caddy's CPU, " +
			"the simulator's left out")
	}
	b.WriteString(":\n\n| names |")
	cols := 0
	for _, iss := range issuers {
		fmt.Fprintf(&b, " %s |", issuerTitle[iss])
		cols++
		if iss == issuerSSLCI && floor {
			b.WriteString(" sslci / internal | each turn | Caddy CPU, sslci / internal |")
			cols += 3
		}
	}
	b.WriteString("\n|---:|" + strings.Repeat("---:|", cols) + "\n")
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
			if iss == issuerSSLCI && floor {
				in, ok1 := r.find(issuerInternal, n)
				sslci, ok2 := r.find(issuerSSLCI, n)
				if ok1 && ok2 {
					fmt.Fprintf(&b, " %s |", ratio(sslci.Seconds, in.Seconds))
				} else {
					b.WriteString(" |")
				}
				b.WriteString(r.turnsSaid(n))
			}
		}
		b.WriteString("\n")
	}

	b.WriteString("\nAPI traffic, CPU and memory of each run. Requests and connections are counted by the benchmark's listener in front of the CA. " +
		"Caddy CPU is Caddy's process, from its start to the end of the run. Simulator CPU is the benchmark process's own, " +
		"from the config load to the last certificate stored: the simulator's work (Pebble's in the ACME rows), which a real SSLCI " +
		"(or Let's Encrypt) does on its own machines, not on Caddy's, plus the benchmark's polling of storage, all of it in the internal rows.\n\n")
	b.WriteString("| issuer | names | API requests | per certificate | TCP connections | Caddy CPU | simulator CPU | Caddy peak RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, iss := range issuers {
		for _, n := range r.sizes() {
			if x, ok := r.find(iss, n); ok {
				fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %d | %.2f s | %.2f s | %d MiB |\n", issuerTitle[iss], x.Names, x.API.Requests,
					float64(x.API.Requests)/float64(x.Names), x.API.Conns, x.CPUSeconds, x.BenchCPUSeconds, (x.PeakKiB+512)/1024)
			}
		}
	}

	if len(r.Restart) > 0 {
		b.WriteString("\nRestart at scale: a new Caddy on storage that holds every certificate, the same config, " +
			"from the config load until each name is served its stored certificate (a TLS handshake per name, 4 at a time); " +
			"API requests from Caddy's start until then:\n\n")
		b.WriteString("| issuer | names | time to serve every name | sslci / internal | API requests | requests |\n|---|---:|---:|---:|---:|---|\n")
		in, haveFloor := r.findRestart(issuerInternal)
		for _, iss := range issuers {
			x, ok := r.findRestart(iss)
			if !ok {
				continue
			}
			rat := ""
			if iss == issuerSSLCI && haveFloor {
				rat = ratio(x.Seconds, in.Seconds)
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %d | %s |\n", issuerTitle[iss], x.Names, seconds(x.Seconds), rat,
				x.API.Requests, kinds(x.API.ByKind))
		}
		for _, x := range r.Restart {
			if x.Sweep == nil {
				continue
			}
			seen := fmt.Sprintf("the sweep's list and a quiet second after it came %.0f s after the config load", x.SweepSeconds)
			if !x.SweepSeen {
				seen = fmt.Sprintf("no list came in %.0f s", x.SweepSeconds)
			}
			fmt.Fprintf(&b, "\nUntil the sweep of %s (-restart-sweep; it runs a minute after the start): %s API requests from Caddy's start; %s.\n",
				issuerTitle[x.Issuer], requestsSaid(*x.Sweep), seen)
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

// turns pairs the runs of the internal CA and of sslci for n names, turn
// by turn (the i-th run of each), as the issuers took turns: each pair ran
// on the machine as it was at that moment, whose speed drifts by tens of
// percent within an hour, so their ratios say how far the median's can be
// trusted.
func (r *results) turns(n int) (pairs [][2]issuance) {
	var in, sslci []issuance
	for _, x := range r.Issuance {
		switch {
		case x.Names != n:
		case x.Issuer == issuerInternal:
			in = append(in, x)
		case x.Issuer == issuerSSLCI:
			sslci = append(sslci, x)
		}
	}
	for i := range min(len(in), len(sslci)) {
		pairs = append(pairs, [2]issuance{in[i], sslci[i]})
	}
	return pairs
}

// turnsSaid is the table's two cells for n names: the range of the turns'
// time ratios, and the median of their ratios of Caddy's CPU.
func (r *results) turnsSaid(n int) string {
	pairs := r.turns(n)
	if len(pairs) == 0 {
		return " | |"
	}
	var times, cpus []float64
	for _, p := range pairs {
		times = append(times, p[1].Seconds/p[0].Seconds)
		if p[0].CPUSeconds > 0 {
			cpus = append(cpus, p[1].CPUSeconds/p[0].CPUSeconds)
		}
	}
	slices.Sort(times)
	slices.Sort(cpus)
	each := ""
	if len(times) > 1 {
		each = fmt.Sprintf("%.2f–%.2f×", times[0], times[len(times)-1])
	}
	cpu := ""
	if len(cpus) > 0 {
		cpu = fmt.Sprintf("%.2f×", cpus[len(cpus)/2])
	}
	return fmt.Sprintf(" %s | %s |", each, cpu)
}

// ratio is a over b, as "1.23×".
func ratio(a, b float64) string { return fmt.Sprintf("%.2f×", a/b) }

// runsSaid says which run each figure is: the largest size's count of
// runs, and the sizes that had another.
func (r *results) runsSaid() string {
	bySize := r.runsBySize()
	sizes := slices.Sorted(maps.Keys(bySize))
	if len(sizes) == 0 {
		return "Each figure is one run."
	}
	base := bySize[sizes[len(sizes)-1]]
	said := "Each figure is one run"
	if base > 1 {
		said = fmt.Sprintf("Each figure is the median of %d runs", base)
	}
	sizesByRuns := map[int][]string{} // the other counts' sizes
	for _, n := range sizes {
		if c := bySize[n]; c != base {
			sizesByRuns[c] = append(sizesByRuns[c], fmt.Sprint(n))
		}
	}
	var others []string
	for _, c := range slices.Sorted(maps.Keys(sizesByRuns)) {
		ns := sizesByRuns[c]
		names := "names"
		if len(ns) == 1 && ns[0] == "1" {
			names = "name"
		}
		others = append(others, fmt.Sprintf("%d for %s %s", c, strings.Join(ns, " and "), names))
	}
	if len(others) > 0 {
		said += " (" + strings.Join(others, ", ") + ")"
	}
	if base > 1 || len(others) > 0 {
		said += ", the issuers taking turns in each"
	}
	return said + "."
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

// requestsSaid is the count of s's requests and, if any, their kinds.
func requestsSaid(s snapshot) string {
	if s.Requests == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", s.Requests, kinds(s.ByKind))
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
