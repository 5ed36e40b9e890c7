package sslci_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// Helpers of the ledger's tests: Caddy's log to count certmagic's Issue
// calls.

// withLogFile makes a JSON config's Caddy log to a file of the test.
func withLogFile(t testing.TB, cfg []byte) ([]byte, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "caddy.log")
	var m map[string]any
	if err := json.Unmarshal(cfg, &m); err != nil {
		t.Fatal(err)
	}
	m["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{
		"writer":  map[string]any{"output": "file", "filename": file},
		"encoder": map[string]any{"format": "json"},
	}}}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out, file
}

// issueCalls counts in Caddy's log the Issue calls certmagic made for
// name (its "obtaining certificate" line, one per attempt) and those that
// failed ("could not get certificate from issuer").
func issueCalls(t testing.TB, logFile, name string) (calls, failed int) {
	t.Helper()
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		var entry struct {
			Msg        string `json:"msg"`
			Identifier string `json:"identifier"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Identifier != name {
			continue
		}
		switch entry.Msg {
		case "obtaining certificate":
			calls++
		case "could not get certificate from issuer":
			failed++
		}
	}
	return calls, failed
}

// withStorage replaces the storage of a JSON config.
func withStorage(t testing.TB, cfg []byte, storage map[string]any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(cfg, &m); err != nil {
		t.Fatal(err)
	}
	m["storage"] = storage
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkEndState fails t unless SSLCI holds no pending order of the
// account but those in others, and exactly the certificates Caddy stores
// for names (matched by names and end_time == the stored leaf's NotAfter)
// plus those in otherCerts.
func (e *testEnv) checkEndState(t testing.TB, names []string, otherOrders, otherCerts []int64) {
	t.Helper()
	for _, o := range e.sim.PendingOrders(e.sim.Token()) {
		if !slices.Contains(otherOrders, o.ID) {
			t.Errorf("order %d for %s left pending", o.ID, o.Domain)
		}
	}
	fs := &certmagic.FileStorage{Path: e.storageDir}
	want := map[string]bool{} // "name end_time" of stored leaves
	for _, name := range names {
		data, err := fs.Load(context.Background(), certmagic.StorageKeys.SiteCert(e.issuerKey(), name))
		if err != nil {
			t.Errorf("no certificate stored for %s: %v", name, err)
			continue
		}
		leaf := e.parseChain(data, name)
		want[fmt.Sprintf("%s %d", name, leaf.NotAfter.Unix())] = true
	}
	got := map[string]bool{}
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		if slices.Contains(otherCerts, c.ID) {
			continue
		}
		k := fmt.Sprintf("%s %d", strings.Join(c.Domains, ","), c.EndTime.Unix())
		if got[k] || !want[k] {
			t.Errorf("certificate %d (%s) at SSLCI is not one Caddy stores", c.ID, k)
		}
		got[k] = true
	}
	for k := range want {
		if !got[k] {
			t.Errorf("stored certificate %s is not at SSLCI", k)
		}
	}
}

// faultSeen reports whether the simulator applied kind to a request for op.
func (e *testEnv) faultSeen(op sslcitest.Op, kind sslcitest.Fault) bool {
	return slices.ContainsFunc(e.sim.Requests(), func(r sslcitest.Request) bool { return r.Op == op && r.Fault == kind })
}

// waitAll waits until Caddy serves a certificate for every name.
func (e *testEnv) waitAll(names []string, limit time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for _, name := range names {
		e.waitForCertificate(name, nil, time.Until(deadline))
	}
}
