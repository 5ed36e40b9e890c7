package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{
		"-addr", "127.0.0.1:0", "-token", "a,b", "-token", "c", "-validity", "48h", "-window", "1h",
		"-sign-csr", "-http-addr", "127.0.0.1:8080", "-dns-server", "127.0.0.1:5353",
		"-tls", "-tls-host", "sim.test,127.0.0.2", "-root-out", "r.pem",
		"-fault-500", "0.1", "-fault-malformed", "0.05", "-fault-html", "0.02", "-fault-drop", "0.01",
		"-fault-429", "0.2", "-fault-503", "0.05", "-fault-pending", "0.04", "-fault-lost-after", "0.03", "-fault-cut-after", "0.06",
		"-latency", "50ms", "-retry-after", "3s", "-pending-retry-after", "2s", "-seed", "7", "-v",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := c.opts
	f := o.Faults
	if o.Addr != "127.0.0.1:0" || !slices.Equal(o.Tokens, []string{"a", "b", "c"}) || o.Validity != 48*time.Hour ||
		o.VerificationWindow != time.Hour || !o.SignCSR || o.HTTPChallengeAddr != "127.0.0.1:8080" ||
		o.DNSServer != "127.0.0.1:5353" || !o.TLS || !slices.Equal(o.TLSHosts, []string{"sim.test", "127.0.0.2"}) ||
		c.rootOut != "r.pem" || !c.verbose || o.Seed != 7 {
		t.Errorf("options %+v", c)
	}
	if f.ServerError != 0.1 || f.MalformedJSON != 0.05 || f.HTML != 0.02 || f.Drop != 0.01 || f.RateLimit != 0.2 ||
		f.Unavailable != 0.05 || f.Pending != 0.04 || f.LostAfter != 0.03 || f.CutAfter != 0.06 ||
		f.Latency != 50*time.Millisecond || f.RetryAfter != 3*time.Second || f.PendingRetryAfter != 2*time.Second {
		t.Errorf("faults %+v", f)
	}

	c, err = parseFlags(nil, io.Discard)
	if err != nil || c.opts.Addr != "127.0.0.1:8555" || c.rootOut != "sslci-sim-root.pem" || len(c.opts.Tokens) != 0 ||
		c.opts.Validity != 0 || c.opts.Faults.RetryAfter != time.Second || c.opts.Faults.PendingRetryAfter != 0 {
		t.Errorf("defaults %+v %v", c, err)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "Usage: sslci-sim") || !strings.Contains(out.String(), "-fault-429") ||
		!strings.Contains(out.String(), "-fault-lost-after") || !strings.Contains(out.String(), "-pending-retry-after") {
		t.Errorf("-h: %v\n%s", err, out.String())
	}
	for _, args := range [][]string{{"-nope"}, {"-latency", "x"}, {"extra"}, {"-tls-host", "a.test"}} {
		var ue usageError
		if _, err := parseFlags(args, io.Discard); !errors.As(err, &ue) {
			t.Errorf("%q: %v", args, err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe to read while run writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// readmeArgs are the arguments of the command the README shows, in its
// simulator section, and the token they give.
func readmeArgs(t *testing.T) (args []string, token string) {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const cmd = "go run ./cmd/sslci-sim "
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, cmd); ok {
			args = strings.Fields(rest)
		}
	}
	if i := slices.Index(args, "-token"); i >= 0 && i+1 < len(args) {
		token = args[i+1]
	}
	if token == "" {
		t.Fatalf("README: no line %q with a -token", cmd)
	}
	if !strings.Contains(usageHead, "sslci-sim "+strings.Join(args, " ")) {
		t.Errorf("-h's example is not the README's command %q", strings.Join(args, " "))
	}
	return args, token
}

// The README's command, on a free port and with the root written to a
// temporary folder: it prints its URL, the root's file and the token, and
// serves the API; -v logs each request, never the token.
func TestRun(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root.pem")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	args, token := readmeArgs(t)
	go func() {
		done <- run(ctx, append(args, "-addr", "127.0.0.1:0", "-root-out", root), &stdout, &stderr)
	}()

	url := waitURL(t, &stdout, &stderr)
	if !strings.Contains(stdout.String(), token) || !strings.Contains(stdout.String(), root) {
		t.Errorf("banner:\n%s", stdout.String())
	}
	pemBytes, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(pemBytes); b == nil {
		t.Error("root file is not PEM")
	} else if cert, err := x509.ParseCertificate(b.Bytes); err != nil || !cert.IsCA {
		t.Errorf("root: %v", err)
	}

	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET: %d", resp.StatusCode)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if log := stderr.String(); !strings.Contains(log, "op=list") || strings.Contains(log, token) {
		t.Errorf("request log:\n%s", log)
	}
}

// TestRunCutAfter runs the program with -fault-cut-after 1: every answer
// is cut off after its headers and half its JSON.
func TestRunCutAfter(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-token", "demo-token", "-root-out", "", "-fault-cut-after", "1", "-v"}, &stdout, &stderr)
	}()
	url := waitURL(t, &stdout, &stderr)

	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer demo-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) || !strings.HasPrefix(string(body), `{"status":true`) {
		t.Errorf("got %d %q %v, want 200 and half a JSON body", resp.StatusCode, body, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "fault=cut_after") {
		t.Errorf("request log:\n%s", stderr.String())
	}
}

// waitURL waits for run to print the API URL.
func waitURL(t *testing.T, stdout, stderr *syncBuffer) string {
	t.Helper()
	urlRE := regexp.MustCompile(`API URL:\s+(\S+)`)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := urlRE.FindStringSubmatch(stdout.String()); m != nil {
			return m[1]
		}
	}
	t.Fatalf("no URL printed:\n%s%s", stdout.String(), stderr.String())
	return ""
}
