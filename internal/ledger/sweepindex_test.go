package ledger

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
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
