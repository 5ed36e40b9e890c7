package sslcitest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a running SSLCI simulator.
type Server struct {
	opts      Options // with defaults applied; mutable settings live below
	ca        *authority
	thumb     string
	lookupTXT func(ctx context.Context, name string) ([]string, error)
	faults    *faultState

	srv     *http.Server
	url     string
	client  *http.Client
	served  chan struct{} // closed when Serve returns
	handler inflight
	conns   atomic.Int64 // accepted

	mu       sync.Mutex // guards the fields below
	offset   time.Duration
	httpAddr string
	signCSR  bool
	store    store
	reqlog   []Request
}

// NewServer starts a simulator listening at once, like httptest.NewServer.
func NewServer(opts Options) (*Server, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:     o,
		faults:   newFaultState(o.Faults, o.Seed),
		served:   make(chan struct{}),
		httpAddr: o.HTTPChallengeAddr,
		signCSR:  o.SignCSR,
		store:    newStore(o.Tokens),
	}
	s.handler.init()
	// The CA must be valid both on the simulator's clock (leaves) and on the
	// wall clock (the TLS serving certificate), which differ when Now is set.
	if s.ca, err = newAuthority(o.Now(), time.Now()); err != nil {
		return nil, err
	}
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if s.thumb, err = jwkThumbprint(&accountKey.PublicKey); err != nil {
		return nil, err
	}
	s.lookupTXT = o.LookupTXT
	if s.lookupTXT == nil {
		s.lookupTXT = resolverFor(o.DNSServer).LookupTXT
	}

	// Go listens with the kernel's backlog (net.core.somaxconn, 4096 on
	// current Linux): 1000 clients connecting at once need nothing more.
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if o.TLS {
		cert, err := s.ca.servingCert(o.TLSHosts)
		if err != nil {
			ln.Close()
			return nil, err
		}
		// HTTP/1.1 only: dropped and truncated responses need a connection
		// of their own to break, which HTTP/2 multiplexing does not give.
		ln = tls.NewListener(ln, &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"http/1.1"},
		})
		scheme = "https"
	}
	s.url = scheme + "://" + dialableAddr(ln.Addr().(*net.TCPAddr)) + "/api"
	s.client = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: s.RootPool()},
		},
	}
	errLog := log.New(io.Discard, "", 0)
	if o.Logf != nil {
		errLog = log.New(logfWriter(o.Logf), "", 0)
	}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveTracked),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.conns.Add(1)
			}
		},
	}
	go func() {
		defer close(s.served)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// dialableAddr turns a wildcard listen address into a loopback one, so that
// URL works when listening on ":8555".
func dialableAddr(a *net.TCPAddr) string {
	ip := a.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
		if a.IP.To4() == nil {
			ip = net.IPv6loopback
		}
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(a.Port))
}

// URL is the API URL, for example "http://127.0.0.1:41234/api".
func (s *Server) URL() string { return s.url }

// Token is the first account's token.
func (s *Server) Token() string { return s.opts.Tokens[0] }

// Tokens are all the accounts' tokens, in the order given.
func (s *Server) Tokens() []string { return append([]string(nil), s.opts.Tokens...) }

// Handler is the API handler, for serving it elsewhere. Dropped and
// truncated responses need a ResponseWriter that can be hijacked.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// HTTPClient is a client that trusts the simulator's root, with a 30s
// timeout.
func (s *Server) HTTPClient() *http.Client { return s.client }

// RootPEM is the root CA certificate in PEM.
func (s *Server) RootPEM() []byte { return append([]byte(nil), s.ca.rootPEM...) }

// Root is the root CA certificate.
func (s *Server) Root() *x509.Certificate { return s.ca.root }

// RootPool is a pool holding only the root CA certificate.
func (s *Server) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.ca.root)
	return p
}

// Thumbprint is the RFC 7638 thumbprint of the simulator's ACME-style
// account key, the second half of every key authorization.
func (s *Server) Thumbprint() string { return s.thumb }

// SetHTTPChallengeAddr changes the address HTTP-01 checks dial.
func (s *Server) SetHTTPChallengeAddr(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.httpAddr = addr
}

// SetSignCSR changes Options.SignCSR.
func (s *Server) SetSignCSR(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signCSR = on
}

// Advance moves the simulator's clock forward by d.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset += d
}

func (s *Server) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.Now().Add(s.offset)
}

// Connections is the number of TCP connections accepted since the server
// started (not through Handler).
func (s *Server) Connections() int64 { return s.conns.Load() }

// PeakInFlight is the most API requests handled at once since the server
// started (not through Handler), counted from the arrival of the request's
// headers to the end of its answer, Latency included.
func (s *Server) PeakInFlight() int { return s.handler.maxSeen() }

// Close stops the server at once, cancelling the requests in flight, and
// returns when their handlers have returned.
func (s *Server) Close() {
	s.handler.close()
	s.srv.Close()
	<-s.served
	s.handler.wait()
	s.client.CloseIdleConnections()
}

// Shutdown stops the server gracefully: it stops accepting and waits for
// the requests in flight until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.served
	s.client.CloseIdleConnections()
	return err
}

func (s *Server) serveTracked(w http.ResponseWriter, r *http.Request) {
	if !s.handler.enter() {
		panic(http.ErrAbortHandler) // closed: drop the connection
	}
	defer s.handler.leave()
	s.serveHTTP(w, r)
}

// randomToken is 32 random bytes in base64url, the shape of tokens and
// challenge tokens.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

type logfWriter func(format string, args ...any)

func (f logfWriter) Write(p []byte) (int, error) {
	f("%s", p)
	return len(p), nil
}
