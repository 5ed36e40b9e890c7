// Package testport hands tests TCP ports on 127.0.0.1 that no other test
// on the machine is using.
//
// Listening on ":0" and closing the listener is not enough: the kernel
// takes that port from the ephemeral range (ip_local_port_range, usually
// 32768-60999), the same range every outgoing connection of every test
// package running in parallel draws from, so by the time Caddy binds it a
// client socket may hold it ("bind: address already in use"). Ports here
// come from below that range, and each is reserved across processes by a
// lock file held until the process exits, so that two test binaries never
// hand out the same one.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// The range ports are drawn from: below Linux's default ephemeral range and
// above the ports well-known services use.
const (
	low  = 20000
	high = 32767
)

var (
	mu   sync.Mutex
	held []*os.File // lock files, kept open (and locked) for the process's life
)

// Get returns a port that was free a moment ago, that this process has not
// handed out before and that no other process using this package holds.
func Get(t testing.TB) int {
	t.Helper()
	port, err := Free()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Free is Get for programs (the bench) that have no testing.TB.
func Free() (int, error) {
	return get(func() int { return low + rand.IntN(high-low+1) })
}

// get tries the ports next proposes.
func get(next func() int) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	dir := filepath.Join(os.TempDir(), "caddy-sslci-testports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, fmt.Errorf("testport: %w", err)
	}
	for range 200 {
		port := next()
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return 0, fmt.Errorf("testport: %w", err)
		}
		// flock locks belong to the open file, not the process: a port
		// this process holds is refused here as one another process holds.
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil { // in use by something that does not take part
			syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			f.Close()
			continue
		}
		ln.Close()
		held = append(held, f)
		return port, nil
	}
	return 0, fmt.Errorf("testport: no free port found in %d-%d", low, high)
}
