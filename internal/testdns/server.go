// Package testdns runs a small authoritative DNS server on loopback for
// tests, and registers a Caddy DNS provider module (dns.providers.testdns)
// that edits the records of such a server in the same process.
package testdns

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Server is an authoritative DNS server for a few zones, listening on
// 127.0.0.1 with UDP and TCP on the same port. Its TXT records live in
// memory; the SOA, the NS ns1.<zone> and that name's A record (127.0.0.1)
// are fixed.
type Server struct {
	addr    string
	zones   []string // FQDNs, most labels first so the closest zone wins
	udp     *dns.Server
	tcp     *dns.Server
	queries atomic.Int64
	close   sync.Once
	delay   atomic.Int64 // time.Duration: see SetDelay
	hidden  atomic.Bool  // see SetHidden

	mu      sync.Mutex
	records []record
}

// Start serves the given zones (e.g. "example.test") on 127.0.0.1 at a free
// port until Close.
func Start(zones ...string) (*Server, error) {
	if len(zones) == 0 {
		return nil, errors.New("testdns: no zone given")
	}
	s := new(Server)
	for _, z := range zones {
		if _, ok := dns.IsDomainName(z); !ok {
			return nil, fmt.Errorf("testdns: invalid zone %q", z)
		}
		s.zones = append(s.zones, dns.CanonicalName(z))
	}
	slices.SortFunc(s.zones, func(a, b string) int { return dns.CountLabel(b) - dns.CountLabel(a) })

	pc, ln, err := listen()
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: ln, Handler: s}
	if err := serve(s.udp); err != nil {
		pc.Close()
		ln.Close()
		return nil, err
	}
	if err := serve(s.tcp); err != nil {
		s.udp.Shutdown()
		ln.Close()
		return nil, err
	}
	register(s)
	return s, nil
}

// listen binds UDP and TCP to the same free loopback port; another process
// may hold the TCP side of the port UDP got, so it tries a few ports.
func listen() (net.PacketConn, net.Listener, error) {
	var err error
	for range 10 {
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("testdns: %w", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		var ln net.Listener
		ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
	}
	return nil, nil, fmt.Errorf("testdns: no port free for both UDP and TCP: %w", err)
}

// serve starts srv and returns once it reads requests, so that Close can
// always shut it down.
func serve(srv *dns.Server) error {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-done:
		return fmt.Errorf("testdns: serving: %w", err)
	}
}

// Addr is the server's address, "127.0.0.1:port", for UDP and TCP alike.
func (s *Server) Addr() string { return s.addr }

// Close stops the server; it may be called more than once.
func (s *Server) Close() {
	s.close.Do(func() {
		unregister(s)
		s.udp.Shutdown()
		s.tcp.Shutdown()
	})
}

// Queries is the number of requests received so far, over UDP and TCP.
func (s *Server) Queries() int { return int(s.queries.Load()) }

// zoneOf returns the zone name (a canonical FQDN) belongs to, or "".
func (s *Server) zoneOf(name string) string {
	for _, z := range s.zones {
		if dns.IsSubDomain(z, name) {
			return z
		}
	}
	return ""
}

// Servers started by Start, by address, for the provider module.
var (
	registryMu sync.Mutex
	registry   = map[string]*Server{}
)

func register(s *Server) {
	registryMu.Lock()
	defer registryMu.Unlock()
	registry[s.addr] = s
}

func unregister(s *Server) {
	registryMu.Lock()
	defer registryMu.Unlock()
	delete(registry, s.addr)
}

func lookupServer(addr string) *Server {
	registryMu.Lock()
	defer registryMu.Unlock()
	return registry[addr]
}
