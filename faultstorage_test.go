package sslci_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// faultStorage is certmagic's FileStorage with its writes (Store and
// Delete) recorded, and one of them failed, or stopped at, as its plan
// says; and the reads its plan's failRead says fail. Locks pass through
// until a crash.
type faultStorage struct {
	*certmagic.FileStorage
	plan *faultPlan
}

// faultMode is what happens at a plan's write failAt.
type faultMode int

const (
	// failWrite: that write fails; the others go through.
	failWrite faultMode = iota
	// killWrites: that write and every later one hang until their context
	// ends, never reaching the disk, as if the process had been killed.
	killWrites
	// crashWrites: the Caddy dies there. That write never happens nor
	// returns until the plan is released; every later operation (reads,
	// writes, Exists, locks) fails; and the locks the Caddy held are
	// released, as they would go stale. Nothing the dying Caddy would have
	// done after that point reaches the storage, or SSLCI.
	crashWrites
)

func (m faultMode) String() string { return [...]string{"fail", "kill", "crash"}[m] }

// faultPlan is what one Caddy run's storage does; faultStorageConfig
// registers it for the storage module's config.
type faultPlan struct {
	failAt int       // the 1-based counted write where the fault is; 0: none
	mode   faultMode // what happens there
	match  string    // only writes whose key contains it are counted ("": all); set before the Caddy starts

	// failRead, when set, fails the reads (Load, Stat, List) it returns an
	// error for, as a flaky network storage may.
	failRead func(op, key string) error

	mu       sync.Mutex
	writes   []storageWrite
	counted  int            // writes matching match
	crashed  bool           // crashWrites, at failAt: every operation fails
	locks    []string       // the locks held through this plan's storage
	tripped  chan struct{}  // closed at the counted write failAt
	released bool           // the Caddy is stopped: no write reaches the disk
	killed   chan struct{}  // closed by release: hung writes return
	landing  sync.WaitGroup // writes under way to the disk: release waits for them
}

type storageWrite struct {
	op, key string
	value   []byte
}

func newFaultPlan(failAt int, mode faultMode) *faultPlan {
	return &faultPlan{failAt: failAt, mode: mode, tripped: make(chan struct{}), killed: make(chan struct{})}
}

var errInjected = errors.New("injected storage fault")

var planIDs atomic.Int64

// faultStorageConfig registers plan until t ends (releasing it then,
// after the Caddy that test started is stopped) and returns the config of
// a storage through it, on the file system at root.
func faultStorageConfig(t testing.TB, root string, plan *faultPlan) map[string]any {
	id := fmt.Sprint(planIDs.Add(1))
	faultPlans.Store(id, plan)
	t.Cleanup(func() {
		plan.release()
		faultPlans.Delete(id)
	})
	return map[string]any{"module": "sslci_test_faults", "root": root, "plan": id}
}

func (s faultStorage) write(ctx context.Context, op, key string, value []byte, do func() error) error {
	p := s.plan
	p.mu.Lock()
	p.writes = append(p.writes, storageWrite{op: op, key: key, value: value})
	if p.crashed {
		p.mu.Unlock()
		return errInjected
	}
	at := false
	if strings.Contains(key, p.match) {
		p.counted++
		at = p.counted == p.failAt
	}
	if at {
		close(p.tripped)
	}
	if at && p.mode == crashWrites {
		p.crashed = true
		for _, l := range p.locks {
			s.FileStorage.Unlock(context.Background(), l)
		}
		p.locks = nil
		p.mu.Unlock()
		<-p.killed
		return errInjected
	}
	dead := p.released || p.mode == killWrites && p.failAt > 0 && p.counted >= p.failAt
	if !dead && !at {
		p.landing.Add(1)
	}
	p.mu.Unlock()
	switch {
	case dead:
		select {
		case <-ctx.Done():
		case <-p.killed:
		}
		return errInjected
	case at:
		return errInjected
	}
	defer p.landing.Done()
	return do()
}

// failNext makes the next write whose key contains match fail, as the
// only fault from now on, and returns the channel closed when it has.
func (p *faultPlan) failNext(match string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.match, p.counted, p.failAt, p.mode, p.tripped = match, 0, 1, failWrite, make(chan struct{})
	return p.tripped
}

// release, once its Caddy is stopped, lets hung writes return and keeps
// any later one (a straggling goroutine) from the disk. It returns once
// the writes that were under way have reached the disk: a killed
// process's last writes land, or not, before the next process starts,
// never while it runs (an fsync on a busy machine can outlast a Caddy's
// stop).
func (p *faultPlan) release() {
	p.mu.Lock()
	if !p.released {
		p.released = true
		close(p.killed)
	}
	p.mu.Unlock()
	p.landing.Wait()
}

// waitQuiet waits until no write has come for d (at most a minute).
func (p *faultPlan) waitQuiet(d time.Duration) {
	last, since := -1, time.Now()
	for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(5 * time.Millisecond) {
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
	return s.write(ctx, "store", key, value, func() error { return s.FileStorage.Store(ctx, key, value) })
}

func (s faultStorage) Delete(ctx context.Context, key string) error {
	return s.write(ctx, "delete", key, nil, func() error { return s.FileStorage.Delete(ctx, key) })
}

func (p *faultPlan) dead() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.crashed
}

func (p *faultPlan) read(op, key string) error {
	p.mu.Lock()
	fail, crashed := p.failRead, p.crashed
	p.mu.Unlock()
	switch {
	case crashed:
		return errInjected
	case fail == nil:
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

func (s faultStorage) Exists(ctx context.Context, key string) bool {
	return !s.plan.dead() && s.FileStorage.Exists(ctx, key)
}

// held records a lock taken; after a crash it is given up at once.
func (s faultStorage) held(name string) error {
	p := s.plan
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.crashed {
		s.FileStorage.Unlock(context.Background(), name)
		return errInjected
	}
	p.locks = append(p.locks, name)
	return nil
}

func (s faultStorage) Lock(ctx context.Context, name string) error {
	if s.plan.dead() {
		return errInjected
	}
	if err := s.FileStorage.Lock(ctx, name); err != nil {
		return err
	}
	return s.held(name)
}

func (s faultStorage) TryLock(ctx context.Context, name string) (bool, error) {
	if s.plan.dead() {
		return false, errInjected
	}
	ok, err := s.FileStorage.TryLock(ctx, name)
	if !ok || err != nil {
		return ok, err
	}
	if err := s.held(name); err != nil {
		return false, err
	}
	return true, nil
}

func (s faultStorage) Unlock(ctx context.Context, name string) error {
	p := s.plan
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.crashed {
		return errInjected
	}
	p.locks = slices.DeleteFunc(p.locks, func(l string) bool { return l == name })
	return s.FileStorage.Unlock(ctx, name)
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

// writeList is writes, one per line, numbered from 1.
func writeList(writes []storageWrite) string {
	var b strings.Builder
	for i, w := range writes {
		fmt.Fprintf(&b, "\n  %d: %s %s", i+1, w.op, w.key)
	}
	return b.String()
}
