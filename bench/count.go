package main

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// counter counts what a CA's API receives: accepted TCP connections and
// HTTP requests, by kind.
type counter struct {
	conns atomic.Int64
	reqs  atomic.Int64
	kind  func(*http.Request) string

	mu     sync.Mutex
	byKind map[string]int
}

func newCounter(kind func(*http.Request) string) *counter {
	return &counter{kind: kind, byKind: map[string]int{}}
}

// snapshot is the counts at one moment.
type snapshot struct {
	Conns    int            `json:"tcp_connections"`
	Requests int            `json:"requests"`
	ByKind   map[string]int `json:"requests_by_kind"`
}

func (c *counter) snapshot() snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds := make(map[string]int, len(c.byKind))
	for k, v := range c.byKind {
		kinds[k] = v
	}
	return snapshot{Conns: int(c.conns.Load()), Requests: int(c.reqs.Load()), ByKind: kinds}
}

// since is the counts from s to c.
func (c snapshot) since(s snapshot) snapshot {
	d := snapshot{Conns: c.Conns - s.Conns, Requests: c.Requests - s.Requests, ByKind: map[string]int{}}
	for k, v := range c.ByKind {
		if n := v - s.ByKind[k]; n != 0 {
			d.ByKind[k] = n
		}
	}
	return d
}

func (c *counter) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.reqs.Add(1)
		k := c.kind(r)
		c.mu.Lock()
		c.byKind[k]++
		c.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// listener counts the connections ln accepts.
func (c *counter) listener(ln net.Listener) net.Listener {
	return countingListener{ln, c}
}

type countingListener struct {
	net.Listener
	c *counter
}

func (l countingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err == nil {
		l.c.conns.Add(1)
	}
	return conn, err
}
