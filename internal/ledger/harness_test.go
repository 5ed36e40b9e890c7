package ledger

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// env is a ledger on file storage (behind a storage that fails reads on
// demand) and the simulator over loopback HTTP: no Caddy.
type env struct {
	t       *testing.T
	sim     *sslcitest.Server
	ledger  *Ledger
	storage *faultyStorage

	mu  sync.Mutex
	txt []string // what the simulator's DNS check finds
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t}
	sim, err := sslcitest.NewServer(sslcitest.Options{SignCSR: true, LookupTXT: func(context.Context, string) ([]string, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return append([]string(nil), e.txt...), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	client, err := api.New(sim.URL(), sim.Token())
	if err != nil {
		t.Fatal(err)
	}
	client.HTTPClient = sim.HTTPClient()
	client.Retry.MaxAttempts = 1
	e.sim = sim
	e.storage = &faultyStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}}
	e.ledger = &Ledger{Keys: Keys{IssuerKey: "sslci-test", Account: "acct"}, Client: client, Logger: zap.NewNop()}
	e.ledger.SetStorage(e.storage)
	return e
}

// obtain verifies names by DNS and finalizes them as an issuance did
// before the Link: the finalize recorded first, then its answer ("obtained",
// with its not_after) written into the record. stored says whether
// certmagic stored it.
func (e *env) obtain(stored bool, names ...string) *x509.Certificate {
	e.t.Helper()
	ctx := context.Background()
	rec, certPEM := e.finalize(names...)
	leaf, err := ParseLeaf(certPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	rec.State, rec.NotAfter = StateObtained, leaf.NotAfter.UTC()
	if err := e.ledger.Put(ctx, rec.Key, rec); err != nil {
		e.t.Fatal(err)
	}
	if stored {
		e.store(names, certPEM)
	}
	return leaf
}

// finalize verifies names by DNS and finalizes them as an issuance does:
// the finalize record written once, before the finalize. It returns the
// record and the certificate.
func (e *env) finalize(names ...string) (*CertRecord, []byte) {
	e.t.Helper()
	ctx := context.Background()
	c := e.ledger.Client
	for _, name := range names {
		v, err := c.RequestVerification(ctx, name, api.MethodDNS)
		if err != nil {
			e.t.Fatal(err)
		}
		e.mu.Lock()
		e.txt = append(e.txt, v.Content)
		e.mu.Unlock()
		if _, err := c.ConfirmVerification(ctx, api.ConfirmRequest{Domain: name, OrderID: v.OrderID, Method: api.MethodDNS}); err != nil {
			e.t.Fatal(err)
		}
	}
	csr, _ := sslcitest.NewCSR(e.t, names...)
	rec := e.ledger.NewCertRecord(names)
	if err := e.ledger.Put(ctx, rec.Key, rec); err != nil {
		e.t.Fatal(err)
	}
	cert, err := c.Finalize(ctx, names, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
	if err != nil {
		e.t.Fatal(err)
	}
	return rec, cert.CertificatePEM
}

// store writes a certificate where certmagic keeps it.
func (e *env) store(names []string, certPEM []byte) {
	e.t.Helper()
	if err := e.storage.FileStorage.Store(context.Background(), e.ledger.Keys.SiteCert(NamesKey(names)), certPEM); err != nil {
		e.t.Fatal(err)
	}
}

// certificates is the ids of the certificates at SSLCI, by names.
func (e *env) certificates() map[string][]int64 {
	out := map[string][]int64{}
	for _, c := range e.sim.Certificates(e.sim.Token()) {
		k := strings.Join(c.Domains, ",")
		out[k] = append(out[k], c.ID)
	}
	return out
}

// faultyStorage is certmagic's FileStorage whose reads (Load, Stat, List)
// fail when fail says so: with an error other than "not exist", as a
// network storage's may for a moment, or with the fs.ErrNotExist of a
// listing cut short.
type faultyStorage struct {
	*certmagic.FileStorage
	mu     sync.Mutex
	fail   func(op, key string) error
	failed int // reads failed
}

var errStorage = errors.New("injected storage read error")

// failing sets which reads fail (nil: none).
func (s *faultyStorage) failing(fail func(op, key string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail, s.failed = fail, 0
}

func (s *faultyStorage) check(op, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail == nil {
		return nil
	}
	err := s.fail(op, key)
	if err != nil {
		s.failed++
	}
	return err
}

func (s *faultyStorage) failures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *faultyStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := s.check("load", key); err != nil {
		return nil, err
	}
	return s.FileStorage.Load(ctx, key)
}

func (s *faultyStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if err := s.check("stat", key); err != nil {
		return certmagic.KeyInfo{}, err
	}
	return s.FileStorage.Stat(ctx, key)
}

func (s *faultyStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := s.check("list", prefix); err != nil {
		return nil, err
	}
	return s.FileStorage.List(ctx, prefix, recursive)
}

// readError fails op on the keys containing part.
func readError(op, part string) func(string, string) error {
	return func(o, key string) error {
		if o == op && strings.Contains(key, part) {
			return fmt.Errorf("%s %s: %w", o, key, errStorage)
		}
		return nil
	}
}

// cutShort fails the first n Lists of dir with fs.ErrNotExist, as
// certmagic's FileStorage fails a walk when an entry goes away during it.
func cutShort(dir string, n int) func(string, string) error {
	var mu sync.Mutex
	return func(op, key string) error {
		mu.Lock()
		defer mu.Unlock()
		if op == "list" && key == dir && n > 0 {
			n--
			return fmt.Errorf("walking %s: %w", dir, fs.ErrNotExist)
		}
		return nil
	}
}
