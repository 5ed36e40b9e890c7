package dnsverify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/internal/dnstxt"
)

const (
	checkInterval = time.Second
	queryTimeout  = 5 * time.Second
	ednsSize      = 1232 // fits an unfragmented packet, as certmagic asks
	maxShown      = 64   // bytes of a TXT value quoted in an error
)

// wait returns once every server to check answers rec, or fails after
// PropagationTimeout, or when ctx ends.
func (s *Solver) wait(ctx context.Context, rec *Record, resolvers []string) error {
	if s.PropagationDelay > 0 {
		if err := sleep(ctx, s.PropagationDelay); err != nil {
			return fmt.Errorf("waiting to check TXT record %s: %w", rec.Name, err)
		}
	}
	if s.PropagationTimeout < 0 {
		return nil
	}
	timeout := s.PropagationTimeout
	if timeout == 0 {
		timeout = defaultPropagationTimeout
	}
	deadline := time.Now().Add(timeout)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	var servers []string
	seen := "no answer" // the last answers, for the error
	for {
		var err error
		if servers == nil {
			servers, err = s.serversToCheck(wctx, rec.Zone, resolvers)
		}
		report := ""
		if err == nil {
			s.logger().Debug("checking DNS propagation", zap.String("name", rec.Name), zap.Strings("servers", servers))
			var ok bool
			if ok, report = check(wctx, servers, rec.Name, rec.Value); ok {
				return nil
			}
		} else {
			report = err.Error()
		}
		// A query cut short by the deadline says nothing about the record.
		if time.Now().Before(deadline) {
			seen = report
		}
		if sleep(wctx, checkInterval) != nil {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("waiting for TXT record %s: %w", rec.Name, err)
	}
	if servers == nil {
		servers = resolvers
	}
	return fmt.Errorf("TXT record %s not visible with the expected value after %v (asked %s): %s",
		rec.Name, timeout, strings.Join(servers, ", "), seen)
}

// serversToCheck are the configured resolvers or, without any, the zone's
// authoritative nameservers, found through the system's resolvers.
func (s *Solver) serversToCheck(ctx context.Context, zone string, resolvers []string) ([]string, error) {
	if len(s.Resolvers) > 0 {
		return resolvers, nil
	}
	port := s.nsPort
	if port == "" {
		port = "53"
	}
	return authoritativeServers(ctx, zone, resolvers, port)
}

// authoritativeServers returns the addresses of the nameservers of zone,
// resolving their names (or taking the glue) through resolvers.
func authoritativeServers(ctx context.Context, zone string, resolvers []string, port string) ([]string, error) {
	resp, err := lookup(ctx, resolvers, zone, dns.TypeNS)
	if err != nil {
		return nil, fmt.Errorf("finding the nameservers of %s: %w", zone, err)
	}
	addrs := map[string][]string{} // name server -> IP addresses
	var names []string
	for _, rr := range resp.Answer {
		if ns, ok := rr.(*dns.NS); ok {
			names = append(names, dns.CanonicalName(ns.Ns))
		}
	}
	for _, rr := range resp.Extra {
		name := dns.CanonicalName(rr.Header().Name)
		switch rr := rr.(type) {
		case *dns.A:
			addrs[name] = append(addrs[name], rr.A.String())
		case *dns.AAAA:
			addrs[name] = append(addrs[name], rr.AAAA.String())
		}
	}

	var servers []string
	for _, name := range names {
		if len(addrs[name]) == 0 {
			addrs[name] = resolve(ctx, resolvers, name)
		}
		for _, ip := range addrs[name] {
			servers = append(servers, net.JoinHostPort(ip, port))
		}
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("no address found for the nameservers %v of %s", names, zone)
	}
	return servers, nil
}

// resolve returns the IPv4 and IPv6 addresses of name; a nameserver that
// cannot be resolved is simply not asked.
func resolve(ctx context.Context, resolvers []string, name string) []string {
	var ips []string
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		resp, err := lookup(ctx, resolvers, name, qtype)
		if err != nil {
			continue
		}
		for _, rr := range resp.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				ips = append(ips, rr.A.String())
			case *dns.AAAA:
				ips = append(ips, rr.AAAA.String())
			}
		}
	}
	return ips
}

// lookup returns the first successful answer of resolvers, in order.
func lookup(ctx context.Context, resolvers []string, name string, qtype uint16) (*dns.Msg, error) {
	err := errors.New("no resolver")
	for _, r := range resolvers {
		var resp *dns.Msg
		resp, err = exchange(ctx, r, name, qtype)
		if err == nil && resp.Rcode != dns.RcodeSuccess {
			err = fmt.Errorf("%s answered %s", r, dns.RcodeToString[resp.Rcode])
		}
		if err == nil {
			return resp, nil
		}
	}
	return nil, err
}

// check asks every server for the TXT records at name; it reports whether
// all of them have value, and what those that had not answered.
func check(ctx context.Context, servers []string, name, value string) (bool, string) {
	want := dnstxt.Escape(value)
	var missing []string
	for _, srv := range servers {
		if seen, ok := checkOne(ctx, srv, name, want); !ok {
			missing = append(missing, srv+": "+seen)
		}
	}
	return len(missing) == 0, strings.Join(missing, "; ")
}

func checkOne(ctx context.Context, server, name, want string) (seen string, ok bool) {
	resp, err := exchange(ctx, server, name, dns.TypeTXT)
	if err != nil {
		return err.Error(), false
	}
	if resp.Rcode != dns.RcodeSuccess {
		return dns.RcodeToString[resp.Rcode], false
	}
	var others []string
	for _, rr := range resp.Answer {
		// Any TXT in the answer: a resolver may follow a CNAME to it.
		if txt, isTXT := rr.(*dns.TXT); isTXT {
			v := strings.Join(txt.Txt, "")
			if v == want {
				return "", true
			}
			if len(v) > maxShown {
				v = v[:maxShown] + "..."
			}
			others = append(others, `"`+v+`"`)
		}
	}
	if len(others) == 0 {
		return "no TXT record", false
	}
	return "other TXT values " + strings.Join(others, " "), false
}

// exchange sends one query over UDP, and again over TCP if the answer was
// truncated.
func exchange(ctx context.Context, server, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(ednsSize, false)
	resp, err := exchangeOver(ctx, "udp", server, m)
	if err == nil && resp.Truncated {
		resp, err = exchangeOver(ctx, "tcp", server, m)
	}
	return resp, err
}

func exchangeOver(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: queryTimeout}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// miekg/dns only honours the deadline of ctx; closing the connection
	// stops a pending read when ctx is cancelled.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return resp, err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
