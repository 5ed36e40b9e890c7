package ledger

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// A storage read that fails for another reason than "not exist" is never
// taken for absence. Each read the ledger makes fails in turn, in each path
// that cancels, deletes or removes (the sweep, the reconciliation of an
// issuance, prune, delete_replaced): nothing is deleted at SSLCI or in
// storage, and the next pass, with storage readable again, settles it.
//
// The state: a.test is stored and served (its record not yet marked
// stored: the sweep a minute after start finds it so); b.test was obtained
// and never stored (ours to delete); c.test was renewed (its first
// certificate superseded). Before the fix, the sweep with a.test's .crt
// unreadable took a.test for unstored and deleted it at SSLCI.
func TestStorageErrorIsNotAbsence(t *testing.T) {
	faults := []struct {
		name string
		fail func(op, key string) error
		only []string // the paths that make this read; none: all
	}{
		{"a stored certificate cannot be read", readError("load", ".crt"), nil},
		{"a ledger record cannot be read", readError("load", "/ledger/certificates/"), nil},
		{"the ledger cannot be listed", readError("list", "/ledger/"), nil},
		{"the stored certificates cannot be listed", readError("list", "certificates/sslci-test"), []string{"prune"}},
		{"a listing is cut short and its folder cannot be looked at", func(op, key string) error {
			switch {
			case op == "list":
				return fmt.Errorf("walking %s: %w", key, errNotExist)
			case op == "stat":
				return fmt.Errorf("stat %s: %w", key, errStorage)
			}
			return nil
		}, nil},
	}
	paths := []struct {
		name    string
		run     func(e *env) error
		removes []string // the names whose old certificate the pass deletes at SSLCI
	}{
		{"sweep", func(e *env) error { return e.ledger.Sweep(context.Background()) }, []string{"b.test"}},
		{"reconciliation", func(e *env) error {
			_, err := e.ledger.Reconcile(context.Background(), ForNames([]string{"a.test", "b.test", "c.test"}), nil, api.MethodDNS)
			return err
		}, []string{"b.test"}},
		{"prune", func(e *env) error { _, err := e.ledger.Prune(context.Background(), false); return err }, []string{"c.test"}}, // b.test is "in progress" for prune: obtained moments ago
		{"delete_replaced", func(e *env) error {
			removals, err := e.ledger.DeleteReplaced(context.Background(), e.ledger.Keys.SiteCert("c.test"))
			if err == nil && !slices.ContainsFunc(removals, func(r Removal) bool { return r.Done }) {
				err = fmt.Errorf("nothing deleted: %+v", removals)
			}
			return err
		}, []string{"c.test"}},
	}
	for _, f := range faults {
		for _, p := range paths {
			if f.only != nil && !slices.Contains(f.only, p.name) {
				continue
			}
			t.Run(f.name+"/"+p.name, func(t *testing.T) {
				e := newEnv(t)
				e.obtain(true, "a.test")
				e.obtain(false, "b.test")
				e.obtain(true, "c.test")
				e.markStored("c.test")
				e.sim.Advance(2 * time.Second) // the renewal's end time is not its predecessor's
				renewed := e.obtain(true, "c.test")
				certsBefore, keysBefore := e.certificates(), e.storedKeys()

				e.storage.failing(f.fail)
				err := p.run(e)
				if e.storage.failures() == 0 {
					t.Fatal("the path made no read that the fault fails: the test tests nothing")
				}
				if err == nil {
					t.Error("the pass reported no error although storage could not be read")
				}
				if n := e.sim.CountRequests(sslcitest.OpDelete); n != 0 {
					t.Errorf("%d deletions at SSLCI while storage could not be read", n)
				}
				if got := e.certificates(); !mapsEqual(got, certsBefore) {
					t.Errorf("certificates at SSLCI: %v, want them all: %v", got, certsBefore)
				}
				if got := e.storedKeys(); !slices.Equal(got, keysBefore) {
					t.Errorf("storage holds %v, want all it held: %v", got, keysBefore)
				}

				e.storage.failing(nil)
				if err := p.run(e); err != nil {
					t.Fatalf("the next pass, storage readable: %v", err)
				}
				got := e.certificates()
				for _, name := range []string{"a.test", "b.test", "c.test"} {
					want := len(certsBefore[name])
					if slices.Contains(p.removes, name) {
						want--
					}
					if len(got[name]) != want {
						t.Errorf("%s: %d certificates at SSLCI after the next pass, want %d (before: %v)", name, len(got[name]), want, certsBefore[name])
					}
				}
				if ids := got["c.test"]; !slices.Contains(ids, slices.Max(certsBefore["c.test"])) {
					t.Errorf("c.test: the renewed certificate (not after %s) was deleted: %v", renewed.NotAfter, ids)
				}
				if ids := got["a.test"]; len(ids) != 1 {
					t.Errorf("a.test: the served certificate was deleted at SSLCI: %v", ids)
				}
			})
		}
	}
}

// errNotExist is how certmagic's FileStorage fails a walk cut short.
var errNotExist = fs.ErrNotExist

// markStored marks the finalize records of name stored, as the
// reconciliation does once it sees the certificate in storage.
func (e *env) markStored(name string) {
	e.t.Helper()
	_, certs, err := e.ledger.Records(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range certs {
		if slices.Equal(r.Names, []string{name}) {
			r.State = StateStored
			if err := e.ledger.Put(context.Background(), r.Key, r); err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

// storedKeys is every key in storage, sorted.
func (e *env) storedKeys() []string {
	e.t.Helper()
	keys, err := e.storage.FileStorage.List(context.Background(), "", true)
	if err != nil {
		e.t.Fatal(err)
	}
	keys = slices.DeleteFunc(keys, func(k string) bool { return strings.HasPrefix(k, "locks") })
	slices.Sort(keys)
	return keys
}

func mapsEqual(a, b map[string][]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
