// Command sslci-sim runs the SSLCI simulator (package sslcitest) as a
// program: a local SSLCI API for development, demos and manual tests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sslci/caddy-sslci/sslcitest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var usage usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, &usage):
		os.Exit(2) // flag has printed the problem and the usage
	default:
		fmt.Fprintln(os.Stderr, "sslci-sim:", err)
		os.Exit(1)
	}
}

// config is what the command line asks for.
type config struct {
	opts    sslcitest.Options
	rootOut string
	verbose bool
}

// usageError is a command line flag package has already reported.
type usageError struct{ error }

const usageHead = `Usage: sslci-sim [flags]

sslci-sim is a local stand-in for the SSLCI REST API (https://www.sslci.com/api):
the same operations at one path, /api, with accounts identified by tokens,
HTTP-01 files and DNS TXT records that are really checked, and certificates
issued by a throw-away root CA that exists only while it runs. It can inject
faults to exercise a client's error handling: each request rolls the dice
once against the -fault rates (which add up to at most 1); a pending roll
strikes only a confirm, a lost-after or cut-after roll only a 200 answer.

Example:
  sslci-sim -token dev-token -http-addr 127.0.0.1:8080 -v
  curl -H "Authorization: Bearer dev-token" http://127.0.0.1:8555/api

Flags (-token and -tls-host may be repeated or take a comma-separated list):
`

// parseFlags turns the arguments into a config; -h gives flag.ErrHelp.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("sslci-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	c := &config{}
	o := &c.opts
	var tokens, tlsHosts listFlag
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:8555", "listen `address`")
	fs.Var(&tokens, "token", "API `token` of an account (default: one random token)")
	// Zero leaves the documented defaults to sslcitest, and -h readable.
	fs.DurationVar(&o.Validity, "validity", 0, "certificate lifetime (default 90 days, 2160h)")
	fs.DurationVar(&o.VerificationWindow, "window", 0, "how long a confirmed verification can be used by finalize (default 29 days, 696h)")
	fs.BoolVar(&o.SignCSR, "sign-csr", false, "sign the CSR sent with finalize instead of generating a key (the real service's behaviour is undocumented)")
	fs.StringVar(&o.HTTPChallengeAddr, "http-addr", "", "`host:port` every HTTP-01 check connects to, whatever the domain (default: the domain's port 80)")
	fs.StringVar(&o.DNSServer, "dns-server", "", "`host:port` of the DNS server TXT checks query (default: the system resolver)")
	fs.BoolVar(&o.TLS, "tls", false, "serve HTTPS with a certificate from the simulator's root (for 127.0.0.1, ::1, localhost and -tls-host)")
	fs.Var(&tlsHosts, "tls-host", "extra `name` or IP for the HTTPS certificate")
	fs.StringVar(&c.rootOut, "root-out", "sslci-sim-root.pem", "`file` to write the root CA certificate to (empty: do not write)")
	fs.Float64Var(&o.Faults.ServerError, "fault-500", 0, "`rate` (0..1) of 500 Internal Server Error answers")
	fs.Float64Var(&o.Faults.MalformedJSON, "fault-malformed", 0, "`rate` of 200 answers with cut-off JSON")
	fs.Float64Var(&o.Faults.HTML, "fault-html", 0, "`rate` of 502 answers with an HTML page")
	fs.Float64Var(&o.Faults.Drop, "fault-drop", 0, "`rate` of connections closed without an answer")
	fs.Float64Var(&o.Faults.RateLimit, "fault-429", 0, "`rate` of 429 Too Many Requests answers")
	fs.Float64Var(&o.Faults.Unavailable, "fault-503", 0, "`rate` of 503 Service Unavailable answers")
	fs.Float64Var(&o.Faults.Pending, "fault-pending", 0, "`rate` of confirm answers that say \"pending\" without checking")
	fs.Float64Var(&o.Faults.LostAfter, "fault-lost-after", 0, "`rate` of requests processed, then answered by closing the connection")
	fs.Float64Var(&o.Faults.CutAfter, "fault-cut-after", 0, "`rate` of requests processed, then answered with half their JSON")
	fs.DurationVar(&o.Faults.Latency, "latency", 0, "delay added before every answer")
	fs.DurationVar(&o.Faults.RetryAfter, "retry-after", time.Second, "Retry-After sent with 429 and 503 (whole seconds)")
	fs.DurationVar(&o.Faults.PendingRetryAfter, "pending-retry-after", 0, "Retry-After sent with \"pending\" confirm answers (whole seconds; default none)")
	fs.Int64Var(&o.Seed, "seed", 0, "seed of the fault dice (the same seed repeats the same faults)")
	fs.BoolVar(&c.verbose, "v", false, "log every request to stderr (tokens are never logged)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q", fs.Arg(0))
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return nil, usageError{err}
	}
	if len(tlsHosts) > 0 && !o.TLS {
		err := errors.New("-tls-host needs -tls")
		fmt.Fprintln(stderr, err)
		return nil, usageError{err}
	}
	o.Tokens, o.TLSHosts = tokens, tlsHosts
	return c, nil
}

// run starts the simulator, reports where it is and serves until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if c.verbose {
		c.opts.Logf = log.New(stderr, "", log.LstdFlags).Printf
	}
	srv, err := sslcitest.NewServer(c.opts)
	if err != nil {
		return err
	}
	defer srv.Close()

	rootNote := "not written (-root-out is empty)"
	if c.rootOut != "" {
		path, err := filepath.Abs(c.rootOut)
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, srv.RootPEM(), 0o644); err != nil {
			return fmt.Errorf("writing the root CA: %w", err)
		}
		rootNote = path
	}
	httpAddr := "each domain's port 80"
	if c.opts.HTTPChallengeAddr != "" {
		httpAddr = c.opts.HTTPChallengeAddr
	}
	dns := "the system resolver"
	if c.opts.DNSServer != "" {
		dns = c.opts.DNSServer
	}
	fmt.Fprintf(stdout, "SSLCI simulator\n  API URL:        %s\n  root CA:        %s\n  HTTP-01 checks: %s\n  DNS checks:     %s\n",
		srv.URL(), rootNote, httpAddr, dns)
	fmt.Fprintln(stdout, "  tokens (the simulator's own test tokens, valid only here):")
	for _, t := range srv.Tokens() {
		fmt.Fprintln(stdout, "    "+t)
	}
	fmt.Fprintln(stdout, "Ctrl-C stops it.")

	<-ctx.Done()
	fmt.Fprintln(stdout, "shutting down")
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// listFlag collects a repeatable flag whose values may be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
