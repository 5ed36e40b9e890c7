package sslci_test

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// faultStorage is certmagic's FileStorage with its writes (Store and
// Delete) recorded, and one of them failed, or stopped at: then that write
// and every later one never reach the disk, as if the process had been
// killed at that write; and the reads its plan's failRead says fail.
// Locks pass through.
type faultStorage struct {
	*certmagic.FileStorage
	plan *faultPlan
}

// faultPlan is what one Caddy run's storage does; tests register it by id
// and name it in the storage module's config.
type faultPlan struct {
	failAt int  // the 1-based write that fails; 0: none
	kill   bool // the write at failAt and all later ones hang until their context ends

	// failRead, when set, fails the reads (Load, Stat, List) it returns an
	// error for, as a flaky network storage may.
	failRead func(op, key string) error

	mu       sync.Mutex
	writes   []storageWrite
	tripped  chan struct{} // closed at write failAt
	released bool          // the Caddy is stopped: no write reaches the disk
	killed   chan struct{} // closed by release: hung writes return
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
	if n == p.failAt {
		close(p.tripped)
	}
	dead := p.released || p.kill && p.failAt > 0 && n >= p.failAt
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

// release, once its Caddy is stopped, lets hung writes return and keeps
// any later one (a straggling goroutine) from the disk.
func (p *faultPlan) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.released {
		p.released = true
		close(p.killed)
	}
}

// waitQuiet waits until no write has come for d (at most a minute).
func (p *faultPlan) waitQuiet(d time.Duration) {
	last, since := -1, time.Now()
	for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(10 * time.Millisecond) {
		if n := len(p.recorded()); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= d {
			return
		}
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

func (p *faultPlan) read(op, key string) error {
	p.mu.Lock()
	fail := p.failRead
	p.mu.Unlock()
	if fail == nil {
		return nil
	}
	return fail(op, key)
}

// setFailRead sets which reads fail (nil: none).
func (p *faultPlan) setFailRead(fail func(op, key string) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failRead = fail
}

func (s faultStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := s.plan.read("load", key); err != nil {
		return nil, err
	}
	return s.FileStorage.Load(ctx, key)
}

func (s faultStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if err := s.plan.read("stat", key); err != nil {
		return certmagic.KeyInfo{}, err
	}
	return s.FileStorage.Stat(ctx, key)
}

func (s faultStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := s.plan.read("list", prefix); err != nil {
		return nil, err
	}
	return s.FileStorage.List(ctx, prefix, recursive)
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

var (
	_ caddy.StorageConverter = (*faultStorageModule)(nil)
	_ certmagic.TryLocker    = faultStorage{}
)
