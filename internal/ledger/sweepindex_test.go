package ledger

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A sweep reads a stored certificate's record once: the next sweep finds it
// in its index and reads no record, and makes no API request; a record
// added since is read (and its certificate, not stored, deleted at SSLCI);
// a damaged index costs the reads, nothing else.
func TestSweepReadsStoredRecordsOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, name := range []string{"a.test", "b.test", "c.test"} {
		e.obtain(true, name)
	}
	var reads atomic.Int64
	e.storage.failing(func(op, key string) error {
		if op == "load" && strings.Contains(key, "/ledger/certificates/") {
			reads.Add(1)
		}
		return nil
	})
	sweep := func(what string, wantReads int64) {
		t.Helper()
		reads.Store(0)
		e.sim.ResetRequests()
		if err := e.ledger.Sweep(ctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n := reads.Load(); n != wantReads {
			t.Errorf("%s: read %d certificate records, want %d", what, n, wantReads)
		}
	}
	sweep("first sweep", 3)
	sweep("second sweep", 0)
	if reqs := e.sim.Requests(); len(reqs) != 0 {
		t.Errorf("a sweep with every record stored made API requests: %v", reqs)
	}

	e.obtain(false, "d.test")            // obtained, never stored: to delete at SSLCI
	sweep("sweep after a new record", 2) // read, then read again by the reconciliation of its names
	if got := e.certificates()["d.test"]; len(got) != 0 {
		t.Errorf("the certificate obtained and not stored is still at SSLCI: %v", got)
	}
	for _, name := range []string{"a.test", "b.test", "c.test"} {
		if len(e.certificates()[name]) != 1 {
			t.Errorf("%s: the stored certificate is no longer at SSLCI", name)
		}
	}

	if err := e.storage.FileStorage.Store(ctx, e.ledger.Keys.SweepIndex(), []byte(`{"stored":`)); err != nil {
		t.Fatal(err)
	}
	sweep("sweep with a damaged index", 3)
	sweep("sweep after", 0)
}

// The sweep started while issuances are in flight (a start with thousands
// of names) waits for a moment with none, up to sweepMaxWait: it reads
// and rewrites records, which would compete with them for the storage.
func TestSweepWaitsForIssuances(t *testing.T) {
	oldPoll, oldMax := sweepPoll, sweepMaxWait
	sweepPoll = time.Millisecond
	t.Cleanup(func() { sweepPoll, sweepMaxWait = oldPoll, oldMax })
	// swept waits for the sweep's last write, its index.
	swept := func(e *env) bool {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if _, err := e.storage.FileStorage.Load(context.Background(), e.ledger.Keys.SweepIndex()); err == nil {
				return true
			}
		}
		return false
	}

	e := newEnv(t)
	e.obtain(true, "a.test")
	done := e.ledger.Issuing()
	e.ledger.StartSweep(0)
	t.Cleanup(e.ledger.StopSweep)
	time.Sleep(100 * time.Millisecond)
	if e.storage.FileStorage.Exists(context.Background(), e.ledger.Keys.SweepIndex()) {
		t.Fatal("the sweep ran while an issuance was in flight")
	}
	done()
	if !swept(e) {
		t.Error("the sweep did not run once the issuance ended")
	}

	// Issuances that never end delay it by sweepMaxWait at most.
	sweepMaxWait = 50 * time.Millisecond
	e2 := newEnv(t)
	e2.obtain(true, "b.test")
	defer e2.ledger.Issuing()()
	e2.ledger.StartSweep(0)
	t.Cleanup(e2.ledger.StopSweep)
	if !swept(e2) {
		t.Error("the sweep waited past sweepMaxWait for an issuance that did not end")
	}
}

// The sweep waits LockWait at most for the names' locks: certmagic holds a
// name's lock through all the retries of a failing issuance, for days,
// and waiting for it would hold the other names' locks meanwhile,
// stopping their renewals. It reconciles what involves only the names it
// locked and leaves the rest, to their issuance or the next sweep.
func TestSweepLeavesLockedNames(t *testing.T) {
	old := LockWait
	LockWait = 100 * time.Millisecond
	t.Cleanup(func() { LockWait = old })
	e := newEnv(t)
	ctx := context.Background()
	e.obtain(false, "a.test") // obtained, never stored: to delete at SSLCI
	e.obtain(false, "b.test")
	e.obtain(false, "b.test", "c.test")
	if err := e.storage.FileStorage.Lock(ctx, IssueLock("b.test")); err != nil { // a failing issuance's
		t.Fatal(err)
	}
	swept := make(chan error, 1)
	go func() { swept <- e.ledger.Sweep(ctx) }()
	select {
	case err := <-swept:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the sweep is still waiting for b.test's lock")
	}
	if got := e.certificates(); len(got["a.test"]) != 0 || len(got["b.test"]) != 1 || len(got["b.test,c.test"]) != 1 {
		t.Errorf("certificates at SSLCI after the sweep: %v; want a.test's deleted, b.test's two left", got)
	}
	if err := e.storage.FileStorage.Unlock(ctx, IssueLock("b.test")); err != nil {
		t.Fatal(err)
	}
	if err := e.ledger.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.certificates(); len(got) != 0 {
		t.Errorf("certificates at SSLCI after the next sweep: %v; want none", got)
	}
}
