package sslci_test

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// alertRules is a Prometheus rule file, with the fields Prometheus
// accepts: any other is an error, as it is to Prometheus.
type alertRules struct {
	Groups []struct {
		Name        string            `yaml:"name"`
		Interval    string            `yaml:"interval"`
		QueryOffset string            `yaml:"query_offset"`
		Limit       int               `yaml:"limit"`
		Labels      map[string]string `yaml:"labels"`
		Rules       []struct {
			Record        string            `yaml:"record"`
			Alert         string            `yaml:"alert"`
			Expr          string            `yaml:"expr"`
			For           string            `yaml:"for"`
			KeepFiringFor string            `yaml:"keep_firing_for"`
			Labels        map[string]string `yaml:"labels"`
			Annotations   map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var (
	// ruleMetric is a metric of the plugin in a PromQL expression, with
	// the matchers of its selector if it has some.
	ruleMetric = regexp.MustCompile(`(caddy_sslci_[a-z_]+)\s*(\{[^}]*\})?`)
	// matcherLabel is the label name of each matcher of a selector.
	matcherLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	// groupingLabels are the labels of by, without, on, ignoring,
	// group_left and group_right.
	groupingLabels = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	// templateLabel is a label an annotation or a label's template reads.
	templateLabel = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
	// promDuration is a duration as Prometheus spells it.
	promDuration = regexp.MustCompile(`^([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$`)
	// scrapeLine is a sample of /metrics: its name, and its labels.
	scrapeLine  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? `)
	scrapeLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
)

// scrapedSeries is, by metric name (as PromQL sees it: a histogram's
// _bucket, _sum and _count), the label names of its series in a scrape.
func scrapedSeries(t *testing.T, scrape string) map[string][]string {
	t.Helper()
	series := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(scrape), "\n") {
		m := scrapeLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("/metrics: a line that is no sample: %q", line)
		}
		labels := series[m[1]]
		for _, l := range scrapeLabel.FindAllStringSubmatch(m[2], -1) {
			if !slices.Contains(labels, l[1]) {
				labels = append(labels, l[1])
			}
		}
		series[m[1]] = labels
	}
	return series
}

// The alerting rules the README shows (testdata/readme/alerts.yaml) are a
// rule file Prometheus would load, whose expressions query only metrics a
// real Caddy's /metrics has, by labels those metrics have. The metrics
// are those of a Caddy that obtained a certificate and had one refused,
// so that every one of the plugin's metrics has a series.
func TestREADMEAlertingRules(t *testing.T) {
	data, err := os.ReadFile("testdata/readme/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	if len(rules.Groups) == 0 {
		t.Fatal("alerts.yaml: no groups")
	}

	e := newEnv(t, sslcitest.Options{})
	e.startCaddy(e.siteConfig("", "alerts.test", ""))
	e.waitForCertificate("alerts.test", nil, time.Minute)
	iss := activeIssuers(t)[0]
	e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultWrongNames, 1)
	csr, _ := sslcitest.NewCSR(t, "alerts.test")
	if _, err := iss.Issue(context.Background(), csr); err == nil {
		t.Fatal("Issue succeeded with a certificate for other names")
	}
	series := scrapedSeries(t, e.waitForMetrics(time.Minute, `caddy_sslci_certificates_stored 1`))
	var names []string
	for name := range series {
		names = append(names, name)
	}
	slices.Sort(names)

	groupNames := map[string]bool{}
	for gi, g := range rules.Groups {
		if g.Name == "" {
			t.Errorf("alerts.yaml: group %d has no name", gi+1)
		}
		if groupNames[g.Name] {
			t.Errorf("alerts.yaml: two groups named %q", g.Name)
		}
		groupNames[g.Name] = true
		if len(g.Rules) == 0 {
			t.Errorf("alerts.yaml: group %q has no rules", g.Name)
		}
		for ri, r := range g.Rules {
			where := g.Name + ": rule " + r.Alert
			if r.Alert == "" {
				t.Errorf("alerts.yaml: %s: rule %d is no alert", g.Name, ri+1)
				where = g.Name + ": a rule"
			}
			if r.Record != "" {
				t.Errorf("alerts.yaml: %s: a recording rule among the alerting rules", where)
			}
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("alerts.yaml: %s has no expr", where)
				continue
			}
			for _, d := range []string{r.For, r.KeepFiringFor} {
				if d != "" && !promDuration.MatchString(d) {
					t.Errorf("alerts.yaml: %s: %q is no Prometheus duration", where, d)
				}
			}
			selectors := ruleMetric.FindAllStringSubmatch(r.Expr, -1)
			if len(selectors) == 0 {
				t.Errorf("alerts.yaml: %s: expr %q names no caddy_sslci_ metric", where, r.Expr)
			}
			var labels []string // of the expr's metrics
			unknown := false
			for _, s := range selectors {
				have, ok := series[s[1]]
				if !ok {
					t.Errorf("alerts.yaml: %s: expr %q names %s, which Caddy's /metrics does not have; it has:\n%s",
						where, r.Expr, s[1], strings.Join(names, "\n"))
					unknown = true
					continue
				}
				labels = append(labels, have...)
				for _, m := range matcherLabel.FindAllStringSubmatch(s[2], -1) {
					if m[1] != "__name__" && !slices.Contains(have, m[1]) {
						t.Errorf("alerts.yaml: %s: expr %q selects %s by a label %q it has not (it has %q)", where, r.Expr, s[1], m[1], have)
					}
				}
			}
			if unknown {
				continue // its labels are not known either
			}
			used := map[string]string{}
			for _, m := range groupingLabels.FindAllStringSubmatch(r.Expr, -1) {
				for _, l := range strings.Split(m[1], ",") {
					if l = strings.TrimSpace(l); l != "" {
						used[l] = "expr " + r.Expr
					}
				}
			}
			for _, texts := range []map[string]string{r.Annotations, r.Labels} {
				for key, text := range texts {
					for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
						used[m[1]] = key + " " + text
					}
				}
			}
			for l, in := range used {
				if !slices.Contains(labels, l) {
					t.Errorf("alerts.yaml: %s: %s uses the label %q, which none of the expr's metrics has (they have %q)", where, in, l, labels)
				}
			}
		}
	}
}
