package sslcitest

import "sync"

// inflight counts running handlers so that Close can wait for them (after
// Close a handler must not call Logf: a test's t.Logf would panic), and
// keeps the most that ran at once.
type inflight struct {
	mu     sync.Mutex
	idle   *sync.Cond
	n      int
	peak   int
	closed bool
}

func (f *inflight) init() { f.idle = sync.NewCond(&f.mu) }

func (f *inflight) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.n++
	f.peak = max(f.peak, f.n)
	return true
}

func (f *inflight) maxSeen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peak
}

func (f *inflight) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 {
		f.idle.Broadcast()
	}
}

func (f *inflight) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

func (f *inflight) wait() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.n > 0 {
		f.idle.Wait()
	}
}
