package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/sslci/caddy-sslci/sslcitest"
)

// The issuers compared: Caddy's own local CA is the floor, certmagic's
// work without any network or API.
const (
	issuerInternal = "internal"
	issuerSSLCI    = "sslci"
	issuerACME     = "acme"
)

// allIssuers are the issuers in the order they run and are shown.
var allIssuers = []string{issuerInternal, issuerSSLCI, issuerACME}

// backend is a CA with the Caddy issuer config that uses it: on loopback in
// this process, its API served on a counting listener, or Caddy's own.
type backend struct {
	issuer map[string]any // the issuer's JSON config
	apps   map[string]any // other Caddy apps it needs, by name
	env    []string       // what Caddy's environment needs for it
	roots  *x509.CertPool // to verify the certificates it issues
	// rootFile, if set, is where Caddy stores the root instead: it exists
	// once a config has been loaded.
	rootFile string
	count    *counter
	byOp     func() map[string]int // per-operation counts, if the CA logs them
	closeFns []func()
}

func (b *backend) counts() snapshot {
	s := b.count.snapshot()
	if b.byOp != nil {
		s.ByKind = b.byOp()
	}
	return s
}

func (b *backend) close() {
	for i := len(b.closeFns) - 1; i >= 0; i-- {
		b.closeFns[i]()
	}
}

// serve serves h on a counting listener on a free loopback port, over TLS
// if cert is set, and returns the address.
func (b *backend) serve(h http.Handler, cert *tls.Certificate) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{
		Handler:           b.count.handler(h),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	counted := b.count.listener(ln)
	if cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
		go srv.ServeTLS(counted, "", "")
	} else {
		go srv.Serve(counted)
	}
	b.closeFns = append(b.closeFns, func() { srv.Close() })
	return ln.Addr().String(), nil
}

// newInternal is Caddy's local CA, the `internal` issuer (`local_certs` in
// a Caddyfile): its certificates are signed in Caddy's process, by the
// root and intermediate the pki app makes in storage at the first load.
func newInternal(storage string) *backend {
	return &backend{
		issuer: map[string]any{"module": "internal"},
		// Never into this machine's trust store.
		apps: map[string]any{"pki": map[string]any{"certificate_authorities": map[string]any{
			"local": map[string]any{"install_trust": false},
		}}},
		rootFile: filepath.Join(storage, "pki", "authorities", "local", "root.crt"),
		count:    newCounter(nil), // no API: every count stays 0
	}
}

// newSSLCI starts the SSLCI simulator, its HTTP checks sent to Caddy's
// HTTP port, and writes its root into dir for the issuer to trust.
func newSSLCI(dir, caddyHTTP string, httpPort int) (*backend, error) {
	sim, err := sslcitest.NewServer(sslcitest.Options{HTTPChallengeAddr: caddyHTTP})
	if err != nil {
		return nil, fmt.Errorf("starting the simulator: %w", err)
	}
	root := filepath.Join(dir, "sslci-sim-root.pem")
	if err := os.WriteFile(root, sim.RootPEM(), 0o644); err != nil {
		sim.Close()
		return nil, err
	}
	b := &backend{
		count:    newCounter(func(r *http.Request) string { return r.Method }),
		roots:    sim.RootPool(),
		env:      []string{"SSLCI_TOKEN=" + sim.Token()},
		closeFns: []func(){sim.Close},
	}
	b.byOp = func() map[string]int {
		ops := map[string]int{}
		for _, r := range sim.Requests() {
			ops[string(r.Op)]++
		}
		return ops
	}
	addr, err := b.serve(sim.Handler(), nil)
	if err != nil {
		b.close()
		return nil, err
	}
	b.issuer = map[string]any{
		"module":              "sslci",
		"token":               "{env.SSLCI_TOKEN}",
		"endpoint":            "http://" + addr + "/api",
		"method":              "http",
		"listen_host":         "127.0.0.1",
		"alternate_http_port": httpPort,
		// The issuer accepts only certificates that chain to a trusted root.
		"trusted_roots_pem_files": []string{root},
	}
	return b, nil
}

// newPebble starts Pebble, Let's Encrypt's test ACME server, without its
// random validation sleeps, bad-nonce rejections or Retry-After waits. Its
// validations resolve every name to 127.0.0.1 and reach Caddy's ports.
// Valid authorizations are always reused, as Let's Encrypt does for 30 days.
func newPebble(dir string, httpPort, httpsPort int) (*backend, error) {
	os.Setenv("PEBBLE_VA_NOSLEEP", "1")
	os.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	os.Setenv("PEBBLE_AUTHZREUSE", "100")
	logFile, err := os.Create(filepath.Join(dir, "pebble.log"))
	if err != nil {
		return nil, err
	}
	b := &backend{count: newCounter(acmeKind), closeFns: []func(){func() { logFile.Close() }}}
	dnsAddr, stopDNS, err := startDNS()
	if err != nil {
		b.close()
		return nil, err
	}
	b.closeFns = append(b.closeFns, stopDNS)

	logger := log.New(logFile, "Pebble ", log.LstdFlags)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "rsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, httpPort, httpsPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	cert, certPEM, err := selfSigned()
	if err != nil {
		b.close()
		return nil, err
	}
	tlsRoot := filepath.Join(dir, "pebble-tls.pem")
	if err := os.WriteFile(tlsRoot, certPEM, 0o644); err != nil {
		b.close()
		return nil, err
	}
	addr, err := b.serve(front.Handler(), cert)
	if err != nil {
		b.close()
		return nil, err
	}
	root, err := x509.ParseCertificate(authority.GetRootCert(0).DER)
	if err != nil {
		b.close()
		return nil, err
	}
	b.roots = x509.NewCertPool()
	b.roots.AddCert(root)
	b.issuer = map[string]any{
		"module": "acme",
		"ca":     "https://" + addr + wfe.DirectoryPath,
		// Without an email, concurrent first obtains race to register the
		// account and one may send the contact "mailto:default", which is
		// refused: that name then waits a minute to retry.
		"email":                   "bench@example.com",
		"trusted_roots_pem_files": []string{tlsRoot},
		"challenges": map[string]any{
			"http":      map[string]any{"alternate_port": httpPort},
			"tls-alpn":  map[string]any{"disabled": true},
			"bind_host": "127.0.0.1",
		},
	}
	return b, nil
}

// acmeKind names an ACME request by method and first path segment, such as
// "POST /order-plz".
func acmeKind(r *http.Request) string {
	seg, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	return r.Method + " /" + seg
}

// selfSigned makes the certificate Pebble's API is served with, for
// 127.0.0.1, and its PEM for Caddy to trust.
func selfSigned() (*tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pebble API on loopback"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// startDNS serves, over UDP and TCP on one loopback port, an A record of
// 127.0.0.1 for every name and nothing else, for Pebble's validations.
func startDNS() (addr string, stop func(), err error) {
	var pc net.PacketConn
	var ln net.Listener
	for range 10 { // the TCP side of the port UDP got may be taken
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return "", nil, err
		}
		addr = pc.LocalAddr().String()
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		return "", nil, fmt.Errorf("DNS server: no port free for UDP and TCP: %w", err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})
	udp := &dns.Server{PacketConn: pc, Handler: handler}
	tcp := &dns.Server{Listener: ln, Handler: handler}
	for _, srv := range []*dns.Server{udp, tcp} {
		// Shutdown works only on a started server: wait for it.
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
	}
	return addr, func() { udp.Shutdown(); tcp.Shutdown() }, nil
}
