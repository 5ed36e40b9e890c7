// Command sslci-demo runs the whole thing on this machine, with no account
// and no network: the SSLCI simulator stands in for SSLCI, and a Caddy with
// the sslci issuer obtains a certificate for a local name, serves a page
// over HTTPS and shows the certificate it got, until interrupted. With
// -dns, names are verified by DNS, through a loopback DNS server for the
// name's zone, and Caddy obtains a wildcard certificate too.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/caddyserver/certmagic"

	_ "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/internal/testdns"
	"github.com/sslci/caddy-sslci/sslcitest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sslci-demo:", err)
		os.Exit(1)
	}
}

// run runs the demo until ctx is done.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("sslci-demo", flag.ContinueOnError)
	name := fs.String("name", "demo.sslci.test", "the site's name (resolved to 127.0.0.1 by the simulator and by the printed curl command)")
	httpPort := fs.Int("http-port", 8080, "Caddy's HTTP port, where the simulator's check arrives (0: any free port)")
	httpsPort := fs.Int("https-port", 8443, "Caddy's HTTPS port (0: any free port)")
	dir := fs.String("dir", "", "where to keep Caddy's storage and the simulator's root certificate (default: a new temporary folder, removed at exit)")
	verbose := fs.Bool("v", false, "show Caddy's INFO logs")
	byDNS := fs.Bool("dns", false, "verify by DNS, with a loopback DNS server for the name's zone, and get a certificate for *.<name> too")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if *httpPort, err = pickPort(*httpPort); err != nil {
		return fmt.Errorf("HTTP port: %w (choose another with -http-port)", err)
	}
	if *httpsPort, err = pickPort(*httpsPort); err != nil {
		return fmt.Errorf("HTTPS port: %w (choose another with -https-port)", err)
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "sslci-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(*dir)
	}

	simOpts := sslcitest.Options{HTTPChallengeAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(*httpPort))}
	// The names of the site, and those a client asks for (one per certificate).
	siteNames, probes, dnsLines := *name, []string{*name}, ""
	if *byDNS {
		dnsSrv, err := testdns.Start(*name)
		if err != nil {
			return fmt.Errorf("starting the DNS server: %w", err)
		}
		defer dnsSrv.Close()
		simOpts.DNSServer = dnsSrv.Addr()
		siteNames, probes = "*."+*name+", "+*name, []string{"www." + *name, *name}
		// The issuer publishes the TXT records with the testdns provider,
		// and waits until the DNS server answers them.
		dnsLines = fmt.Sprintf("\n\t\t\tdns testdns %s\n\t\t\tresolvers %s\n\t\t\tpropagation_timeout 30s", dnsSrv.Addr(), dnsSrv.Addr())
		fmt.Fprintf(out, "DNS server for %s: %s (queried by the simulator's checks and by the issuer)\n", *name, dnsSrv.Addr())
	}
	sim, err := sslcitest.NewServer(simOpts)
	if err != nil {
		return fmt.Errorf("starting the simulator: %w", err)
	}
	defer sim.Close()
	rootFile := filepath.Join(*dir, "sslci-sim-root.pem")
	if err := os.WriteFile(rootFile, sim.RootPEM(), 0o644); err != nil {
		return err
	}

	// The token goes through an environment placeholder, as it should in a
	// real Caddyfile: it never appears in the config text.
	os.Setenv("SSLCI_TOKEN", sim.Token())
	logLevel := "WARN"
	if *verbose {
		logLevel = "INFO"
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	storage file_system %q
	log {
		level %s
	}
}

%s {
	tls {
		issuer sslci {env.SSLCI_TOKEN} {
			endpoint %s
			trusted_roots %q%s
		}
	}
	respond "Hello from {host}: Caddy serves this page with a certificate it obtained from the SSLCI simulator.
"
}
`, *httpPort, *httpsPort, filepath.Join(*dir, "storage"), logLevel, siteNames, sim.URL(), rootFile, dnsLines)
	cfgJSON, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		return fmt.Errorf("adapting the Caddyfile: %w", err)
	}
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "caddyfile:", w.String())
	}
	fmt.Fprintf(out, "SSLCI simulator: %s (root CA written to %s)\n", sim.URL(), rootFile)
	method := "HTTP"
	if *byDNS {
		method = "DNS"
	}
	fmt.Fprintf(out, "Caddy: HTTP on 127.0.0.1:%d, HTTPS on 127.0.0.1:%d; obtaining certificates for %s, verified by %s ...\n", *httpPort, *httpsPort, siteNames, method)
	start := time.Now()
	if err := caddy.Load(cfgJSON, true); err != nil {
		return fmt.Errorf("starting Caddy: %w", err)
	}
	defer caddy.Stop() //nolint:errcheck

	httpsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(*httpsPort))
	var leaves []*x509.Certificate
	for _, probe := range probes {
		leaf, err := waitForCertificate(ctx, httpsAddr, probe, sim.RootPool(), 2*time.Minute)
		if err != nil {
			return err
		}
		leaves = append(leaves, leaf)
	}
	fmt.Fprintf(out, "\n%d certificate(s) obtained in %s with %d SSLCI API requests:\n", len(leaves), time.Since(start).Round(time.Millisecond), sim.CountRequests(sslcitest.OpAny))
	for _, leaf := range leaves {
		fmt.Fprintf(out, "\n  issuer:    %s\n", leaf.Issuer.CommonName)
		fmt.Fprintf(out, "  names:     %s\n", strings.Join(leaf.DNSNames, ", "))
		fmt.Fprintf(out, "  valid:     %s to %s\n", leaf.NotBefore.UTC().Format(time.DateTime), leaf.NotAfter.UTC().Format(time.DateTime))
		fmt.Fprintf(out, "  serial:    %x\n", leaf.SerialNumber)
		fmt.Fprintf(out, "  key:       %s\n", keySource(ctx, filepath.Join(*dir, "storage"), leaf.DNSNames[0]))
	}

	body, err := fetch(ctx, httpsAddr, probes[0], sim.RootPool())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nGET https://%s:%d/ -> %s", probes[0], *httpsPort, body)
	fmt.Fprintf(out, "\nTry it yourself:\n  curl --resolve %s:%d:127.0.0.1 --cacert %s https://%s:%d/\n", probes[0], *httpsPort, rootFile, probes[0], *httpsPort)
	fmt.Fprintln(out, "\nRunning until interrupted (Ctrl-C).")
	<-ctx.Done()
	fmt.Fprintln(out, "Stopping.")
	return nil
}

// pickPort returns port if it is free on loopback, or any free port for 0.
func pickPort(port int) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitForCertificate polls until Caddy serves a certificate for name that
// verifies against roots.
func waitForCertificate(ctx context.Context, addr, name string, roots *x509.CertPool, limit time.Duration) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var lastErr error
	for {
		d := tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots}}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
			conn.Close()
			return leaf, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no certificate for %s after %s: %w", name, limit, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func fetch(ctx context.Context, addr, name string, roots *x509.CertPool) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+name+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return string(body), err
}

// keySource reads, from the metadata certmagic stored with the
// certificate, whose private key it is for.
func keySource(ctx context.Context, storageDir, name string) string {
	storage := &certmagic.FileStorage{Path: storageDir}
	issuerDirs, _ := storage.List(ctx, "certificates", false)
	for _, issuerDir := range issuerDirs {
		data, err := storage.Load(ctx, certmagic.StorageKeys.SiteMeta(filepath.Base(issuerDir), name))
		if err != nil {
			continue
		}
		var meta struct {
			IssuerData struct {
				KeySource string `json:"key_source"`
			} `json:"issuer_data"`
		}
		if json.Unmarshal(data, &meta) == nil {
			switch meta.IssuerData.KeySource {
			case "csr":
				return "generated by Caddy (SSLCI signed Caddy's CSR)"
			case "sslci":
				return "generated by SSLCI and stored by the issuer in place of Caddy's"
			}
		}
	}
	return "unknown (no metadata found in storage)"
}
