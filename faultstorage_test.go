package sslci_test

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// faultStorage is certmagic's FileStorage with its writes (Store and
// Delete) recorded, and one of them failed, or stopped at: then that write
// and every later one never reach the disk, as if the process had been
// killed at that write. Reads and locks pass through.
type faultStorage struct {
	*certmagic.FileStorage
	plan *faultPlan
}

// faultPlan is what one Caddy run's storage does; tests register it by id
// and name it in the storage module's config.
type faultPlan struct {
	failAt int  // the 1-based write that fails; 0: none
	kill   bool // the write at failAt and all later ones hang until their context ends

	mu      sync.Mutex
	writes  []storageWrite
	tripped chan struct{} // closed at write failAt
	killed  chan struct{} // closed by release: hung writes return
}

type storageWrite struct {
	op, key string
	value   []byte
}

func newFaultPlan(failAt int, kill bool) *faultPlan {
	return &faultPlan{failAt: failAt, kill: kill, tripped: make(chan struct{}), killed: make(chan struct{})}
}

var errInjected = errors.New("injected storage fault")

func (p *faultPlan) write(ctx context.Context, op, key string, value []byte, do func() error) error {
	p.mu.Lock()
	n := len(p.writes) + 1
	p.writes = append(p.writes, storageWrite{op: op, key: key, value: value})
	dead := p.kill && p.failAt > 0 && n >= p.failAt
	if n == p.failAt {
		close(p.tripped)
	}
	p.mu.Unlock()
	switch {
	case dead:
		select {
		case <-ctx.Done():
		case <-p.killed:
		}
		return errInjected
	case n == p.failAt:
		return errInjected
	}
	return do()
}

// release lets hung writes return (without writing), once their Caddy is stopped.
func (p *faultPlan) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.killed:
	default:
		close(p.killed)
	}
}

func (p *faultPlan) recorded() []storageWrite {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]storageWrite(nil), p.writes...)
}

func (s faultStorage) Store(ctx context.Context, key string, value []byte) error {
	return s.plan.write(ctx, "store", key, value, func() error { return s.FileStorage.Store(ctx, key, value) })
}

func (s faultStorage) Delete(ctx context.Context, key string) error {
	return s.plan.write(ctx, "delete", key, nil, func() error { return s.FileStorage.Delete(ctx, key) })
}

// String is FileStorage's, with a prefix: certmagic and Caddy tell storages apart by it.
func (s faultStorage) String() string { return "faults:" + s.FileStorage.String() }

var faultPlans sync.Map // id -> *faultPlan

// faultStorageModule is the Caddy storage module caddy.storage.sslci_test_faults.
type faultStorageModule struct {
	Root string `json:"root"`
	Plan string `json:"plan"`
}

func init() { caddy.RegisterModule(faultStorageModule{}) }

func (faultStorageModule) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.sslci_test_faults", New: func() caddy.Module { return new(faultStorageModule) }}
}

func (m *faultStorageModule) CertMagicStorage() (certmagic.Storage, error) {
	p, ok := faultPlans.Load(m.Plan)
	if !ok {
		return nil, errors.New("no fault plan " + m.Plan)
	}
	return faultStorage{FileStorage: &certmagic.FileStorage{Path: m.Root}, plan: p.(*faultPlan)}, nil
}

// writesUnder returns the recorded writes of keys with prefix, as "op key".
func writesUnder(ws []storageWrite, prefix string) []string {
	var out []string
	for _, w := range ws {
		if strings.HasPrefix(w.key, prefix) {
			out = append(out, w.op+" "+w.key)
		}
	}
	return out
}

var (
	_ caddy.StorageConverter = (*faultStorageModule)(nil)
	_ certmagic.TryLocker    = faultStorage{}
)
