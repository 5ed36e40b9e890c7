package sslci_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// Helpers of the ledger's tests: Caddy's log to count certmagic's Issue
// calls, and a test-only storage module that "crashes" its Caddy.

func init() {
	caddy.RegisterModule(new(crashStorage))
}

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

// crashStorage is caddy.storage.sslci_test_crash: file system storage
// whose Caddy "dies" at the Nth Store of a key containing CrashAt: that
// Store never returns nor happens, every later operation fails, and the
// locks it held are released (as they would go stale). Nothing the dying
// Caddy would have done after that point reaches SSLCI or the storage.
type crashStorage struct {
	Root    string `json:"root"`
	CrashAt string `json:"crash_at"`
	Nth     int    `json:"nth"`

	fs      *certmagic.FileStorage
	mu      sync.Mutex
	seen    int
	crashed bool
	locks   []string
}

var errCrashed = errors.New("crashed")

// crashes holds, by storage root, a channel closed when its Caddy crashed.
var crashes sync.Map

func (*crashStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.sslci_test_crash", New: func() caddy.Module { return new(crashStorage) }}
}

func (s *crashStorage) CertMagicStorage() (certmagic.Storage, error) {
	s.fs = &certmagic.FileStorage{Path: s.Root}
	return s, nil
}

func (s *crashStorage) dead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crashed
}

func (s *crashStorage) Store(ctx context.Context, key string, value []byte) error {
	s.mu.Lock()
	if s.crashed {
		s.mu.Unlock()
		return errCrashed
	}
	if strings.Contains(key, s.CrashAt) {
		if s.seen++; s.seen == s.Nth {
			s.crashed = true
			if ch, ok := crashes.Load(s.Root); ok {
				close(ch.(chan struct{}))
			}
			for _, l := range s.locks {
				s.fs.Unlock(context.Background(), l)
			}
			s.mu.Unlock()
			select {} // this goroutine is dead
		}
	}
	s.mu.Unlock()
	return s.fs.Store(ctx, key, value)
}

func (s *crashStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if s.dead() {
		return nil, errCrashed
	}
	return s.fs.Load(ctx, key)
}

func (s *crashStorage) Delete(ctx context.Context, key string) error {
	if s.dead() {
		return errCrashed
	}
	return s.fs.Delete(ctx, key)
}

func (s *crashStorage) Exists(ctx context.Context, key string) bool {
	return !s.dead() && s.fs.Exists(ctx, key)
}

func (s *crashStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if s.dead() {
		return nil, errCrashed
	}
	return s.fs.List(ctx, prefix, recursive)
}

func (s *crashStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if s.dead() {
		return certmagic.KeyInfo{}, errCrashed
	}
	return s.fs.Stat(ctx, key)
}

func (s *crashStorage) Lock(ctx context.Context, name string) error {
	if s.dead() {
		return errCrashed
	}
	if err := s.fs.Lock(ctx, name); err != nil {
		return err
	}
	s.mu.Lock()
	s.locks = append(s.locks, name)
	s.mu.Unlock()
	return nil
}

func (s *crashStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.crashed {
		return errCrashed
	}
	s.locks = slices.DeleteFunc(s.locks, func(l string) bool { return l == name })
	return s.fs.Unlock(ctx, name)
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
