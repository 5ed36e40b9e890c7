package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
)

// site is what one Caddy config holds: a server on each port, and one
// automation policy for every name with the issuer under test.
type site struct {
	storage             string
	httpPort, httpsPort int
	issuer              map[string]any
	apps                map[string]any // other apps the issuer needs
	names               []string       // managed from the start
	onDemandAsk         string         // if set, on-demand TLS, names allowed by this URL
	renewalRatio        float64        // if set, the policy's renewal_window_ratio
}

func (s site) config() map[string]any {
	policy := map[string]any{
		"issuers":               []any{s.issuer},
		"disable_ocsp_stapling": true,
	}
	if s.renewalRatio != 0 {
		policy["renewal_window_ratio"] = s.renewalRatio
	}
	automation := map[string]any{"policies": []any{policy}}
	if s.onDemandAsk != "" {
		policy["on_demand"] = true
		automation["on_demand"] = map[string]any{
			"permission": map[string]any{"module": "http", "endpoint": s.onDemandAsk},
		}
	}
	tlsApp := map[string]any{"automation": automation, "disable_ocsp_stapling": true,
		// certmagic's storage clean at the first start can delete a site's
		// folder while its first certificate is written into it: seen in a
		// 1000-name run ("deleting site folder because key is empty", then
		// "caching certificate after obtaining it: ... no such file"). A
		// new storage has nothing to clean.
		"disable_storage_clean": true}
	if len(s.names) > 0 {
		tlsApp["certificates"] = map[string]any{"automate": s.names}
	}
	noAuto := map[string]any{"disable": true}
	apps := map[string]any{
		"tls": tlsApp,
		"http": map[string]any{
			"http_port":  s.httpPort,
			"https_port": s.httpsPort,
			"servers": map[string]any{
				"https": map[string]any{
					"listen":                  []string{s.addr(s.httpsPort)},
					"protocols":               []string{"h1", "h2"},
					"tls_connection_policies": []any{map[string]any{}},
					"automatic_https":         noAuto,
					"routes": []any{map[string]any{"handle": []any{
						map[string]any{"handler": "static_response", "body": "ok"},
					}}},
				},
				// Only the HTTP checks arrive here; Caddy answers them
				// before any route.
				"http": map[string]any{
					"listen":          []string{s.addr(s.httpPort)},
					"protocols":       []string{"h1"},
					"automatic_https": noAuto,
				},
			},
		},
	}
	maps.Copy(apps, s.apps)
	return map[string]any{
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "INFO"}}},
		"storage": map[string]any{"module": "file_system", "root": s.storage},
		"apps":    apps,
	}
}

func (s site) addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// metaFile is where certmagic stores the metadata of name's certificate
// under an issuer's folder: the last of its three files stored.
func metaFile(storage, issuerDir, name string) string {
	return filepath.Join(storage, "certificates", issuerDir, name, name+".json")
}

// waitStored returns when every name's certificate is in storage. Each
// poll drops the stored names from the front of the list up to the first
// that is not: the names are stored in any order, and only the last
// matters. Polls come every millisecond or every 200th of the time so
// far, whichever is longer (the time is at most 1 ms or 0.5% late), so
// polling takes next to nothing from Caddy's machine. (Every 5 ms, the
// poll's lateness was up to a sixth of a one-name run's 30 ms.)
func waitStored(ctx context.Context, storage string, names []string) error {
	start := time.Now()
	pending := slices.Clone(names)
	for {
		issuers, _ := os.ReadDir(filepath.Join(storage, "certificates"))
		for len(pending) > 0 && isStored(storage, issuers, pending[0]) {
			pending = pending[1:]
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			missing := slices.DeleteFunc(pending, func(n string) bool { return isStored(storage, issuers, n) })
			return fmt.Errorf("%d of %d certificates not in storage: %w", len(missing), len(names), ctx.Err())
		case <-time.After(max(time.Millisecond, time.Since(start)/200)):
		}
	}
}

// isStored tells whether name's certificate is in storage under one of
// issuers' folders.
func isStored(storage string, issuers []os.DirEntry, name string) bool {
	for _, iss := range issuers {
		if _, err := os.Stat(metaFile(storage, iss.Name(), name)); err == nil {
			return true
		}
	}
	return false
}

// storedCert is the stored certificate PEM of name, from any issuer.
func storedCert(storage, name string) []byte {
	issuers, _ := os.ReadDir(filepath.Join(storage, "certificates"))
	for _, iss := range issuers {
		if data, err := os.ReadFile(filepath.Join(storage, "certificates", iss.Name(), name, name+".crt")); err == nil {
			return data
		}
	}
	return nil
}

// waitReplaced returns when name's stored certificate is no longer old.
func waitReplaced(ctx context.Context, storage, name string, old []byte) error {
	for {
		if cur := storedCert(storage, name); cur != nil && !bytes.Equal(cur, old) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the certificate of %s was not renewed: %w", name, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// handshake connects to addr with name as SNI and returns the leaf, which
// must verify against roots for name.
func handshake(ctx context.Context, addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// verifyServed checks that Caddy serves every name a certificate that
// verifies and, if want is set, is want[name] (DER), retrying each for a
// while: a stored certificate is loaded a moment later.
func verifyServed(ctx context.Context, addr string, names []string, roots *x509.CertPool, want map[string][]byte) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(len(names))*20*time.Millisecond)
	defer cancel()
	work := make(chan string)
	errs := make(chan error, len(names))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for name := range work {
				errs <- retryHandshake(ctx, addr, name, roots, want[name])
			}
		})
	}
	for _, n := range names {
		work <- n
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func retryHandshake(ctx context.Context, addr, name string, roots *x509.CertPool, want []byte) error {
	for {
		leaf, err := handshake(ctx, addr, name, roots)
		if err == nil && want != nil && !bytes.Equal(leaf.Raw, want) {
			err = errors.New("not the certificate in storage")
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("Caddy does not serve a valid certificate for %s: %w", name, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
