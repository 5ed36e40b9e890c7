package sslci_test

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/sslcitest"
)

func init() {
	caddy.RegisterModule(new(cutListStorage))
}

// cutListStorage is caddy.storage.sslci_test_cutlist: file system storage
// whose first listing of the ledger after an order record is written is
// cut short, as certmagic's FileStorage cuts a listing when another
// issuance deletes a key during the walk: a key really is stored and
// deleted meanwhile, over and over, until the real listing fails.
type cutListStorage struct {
	Root string `json:"root"`
	certmagic.Storage
}

// cutState is, by storage root, where its Caddy is.
type cutState struct {
	mu         sync.Mutex
	armed, cut bool
}

var cutStates sync.Map

func (*cutListStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.sslci_test_cutlist", New: func() caddy.Module { return new(cutListStorage) }}
}

func (s *cutListStorage) CertMagicStorage() (certmagic.Storage, error) {
	s.Storage = &certmagic.FileStorage{Path: s.Root}
	return s, nil
}

func (s *cutListStorage) state() *cutState {
	st, _ := cutStates.LoadOrStore(s.Root, new(cutState))
	return st.(*cutState)
}

func (s *cutListStorage) Store(ctx context.Context, key string, value []byte) error {
	if strings.Contains(key, "/ledger/orders/") {
		st := s.state()
		st.mu.Lock()
		st.armed = !st.cut
		st.mu.Unlock()
	}
	return s.Storage.Store(ctx, key, value)
}

func (s *cutListStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	st := s.state()
	st.mu.Lock()
	cut := st.armed && strings.Contains(prefix, "/ledger")
	if cut {
		st.armed, st.cut = false, true
	}
	st.mu.Unlock()
	if cut {
		return s.cutListing(ctx, prefix, recursive)
	}
	return s.Storage.List(ctx, prefix, recursive)
}

// cutListing lists prefix while a key under it comes and goes, until the
// listing fails with fs.ErrNotExist.
func (s *cutListStorage) cutListing(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	key := path.Join(prefix, "churn", "entry")
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.Storage.Store(ctx, key, []byte("churn")) //nolint:errcheck // the listing tells
			s.Storage.Delete(ctx, key)                 //nolint:errcheck
		}
	}()
	defer func() { close(stop); <-done }()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if keys, err := s.Storage.List(ctx, prefix, recursive); errors.Is(err, fs.ErrNotExist) {
			return keys, err
		}
	}
	return nil, errors.New("test: no listing was cut short")
}

// A listing of the ledger that another issuance's write cuts short is not
// an empty ledger: after a lost answer, the reconciliation before the next
// request still finds the lost request's record, and cancels its order.
func TestLedgerListingCutShort(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	name := "cut.test"
	st := new(cutState)
	cutStates.Store(e.storageDir, st)
	t.Cleanup(func() { cutStates.Delete(e.storageDir) })
	e.sim.InjectFault(sslcitest.OpRequest, sslcitest.FaultLostAfter, 1)
	e.startCaddy(withStorage(t, e.siteConfig("", name, ""), map[string]any{"module": "sslci_test_cutlist", "root": e.storageDir}))
	e.waitForCertificate(name, nil, 2*time.Minute)

	st.mu.Lock()
	cut := st.cut
	st.mu.Unlock()
	if !cut || !e.faultSeen(sslcitest.OpRequest, sslcitest.FaultLostAfter) {
		t.Fatalf("no ledger listing was cut short after a lost answer; requests: %+v", e.sim.Requests())
	}
	if n := e.sim.CountRequests(sslcitest.OpRequest); n != 2 {
		t.Errorf("%d verification requests, want the lost one and one more", n)
	}
	e.checkEndState(t, []string{name}, nil, nil)
}
