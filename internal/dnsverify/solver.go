// Package dnsverify publishes the TXT record of a DNS domain verification
// through a libdns provider and waits until DNS serves it. It is configured
// like Caddy's ACME DNS challenge (caddytls.DNSChallengeConfig), but takes
// the final TXT value as given: certmagic's DNS01Solver would publish a
// digest of an ACME key authorization instead.
package dnsverify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// Provider is what a DNS provider module (dns.providers.*) must do here.
type Provider interface {
	libdns.RecordAppender
	libdns.RecordDeleter
}

const (
	defaultPropagationTimeout = 2 * time.Minute
	cleanUpTimeout            = 30 * time.Second
)

// Solver publishes TXT records and waits for them to propagate. Its fields
// are set once; then it is safe for concurrent use.
type Solver struct {
	// Provider writes and deletes the records. Required.
	Provider Provider

	// TTL of the records.
	TTL time.Duration

	// PropagationDelay is how long to wait before the first check.
	PropagationDelay time.Duration

	// PropagationTimeout is how long to wait for the record to be visible:
	// 0 means 2 minutes, a negative value means not to check at all.
	PropagationTimeout time.Duration

	// Resolvers ("host" or "host:port", port 53 by default) are used to find
	// the zone and are then asked for the record until every one of them
	// answers it. When empty, the system's resolvers find the zone and its
	// NS records, and the zone's authoritative nameservers are asked.
	Resolvers []string

	// OverrideDomain, if set, is the name the record is published under
	// instead of the one given to Present: the operator has delegated the
	// verification name to it with a CNAME.
	OverrideDomain string

	// Logger is optional.
	Logger *zap.Logger

	// Tests must stay on loopback: bootstrap replaces the system's
	// resolvers and nsPort the port 53 of the authoritative nameservers.
	bootstrap []string
	nsPort    string
}

// Record is a TXT record published by Present.
type Record struct {
	Zone  string // the zone it is in, e.g. "example.com."
	Name  string // where it is, e.g. "_acme-challenge.example.com."
	Value string

	provided libdns.Record // as the provider returned it
}

// Present publishes value at name (e.g. "_acme-challenge.example.com"), or
// at OverrideDomain, and returns once the resolvers serve it. If it fails
// after writing the record, it deletes it again before returning.
func (s *Solver) Present(ctx context.Context, name, value string) (*Record, error) {
	if s.Provider == nil {
		return nil, errors.New("no DNS provider configured")
	}
	if s.OverrideDomain != "" {
		name = s.OverrideDomain
	}
	fqdn := dns.CanonicalName(name)
	if _, ok := dns.IsDomainName(fqdn); !ok || fqdn == "." {
		return nil, fmt.Errorf("invalid DNS name %q", name)
	}

	resolvers := s.resolvers()
	zone, err := certmagic.FindZoneByFQDN(ctx, s.logger(), fqdn, resolvers)
	if err != nil {
		return nil, fmt.Errorf("finding the DNS zone of %s (resolvers %v): %w", fqdn, resolvers, err)
	}

	rec := &Record{Zone: zone, Name: fqdn, Value: value}
	if err := s.append(ctx, rec); err != nil {
		// The provider may have written it all the same (a request
		// cancelled halfway): remove whatever is there.
		return nil, errors.Join(err, s.CleanUp(ctx, rec))
	}
	if err := s.wait(ctx, rec, resolvers); err != nil {
		return nil, errors.Join(err, s.CleanUp(ctx, rec))
	}
	return rec, nil
}

func (s *Solver) append(ctx context.Context, rec *Record) error {
	txt := libdns.TXT{Name: libdns.RelativeName(rec.Name, rec.Zone), TTL: s.TTL, Text: rec.Value}
	s.logger().Debug("creating DNS record",
		zap.String("zone", rec.Zone),
		zap.String("name", rec.Name),
		zap.String("value", rec.Value),
		zap.Duration("ttl", s.TTL))
	got, err := s.Provider.AppendRecords(ctx, rec.Zone, []libdns.Record{txt})
	if err != nil {
		return fmt.Errorf("adding TXT record %s to zone %s: %w", rec.Name, rec.Zone, err)
	}
	if len(got) != 1 {
		return fmt.Errorf("adding TXT record %s to zone %s: the provider returned %d records", rec.Name, rec.Zone, len(got))
	}
	rec.provided = got[0]
	return nil
}

// CleanUp deletes rec. It uses a context of its own, detached from ctx,
// since it must run even when ctx is already cancelled.
func (s *Solver) CleanUp(ctx context.Context, rec *Record) error {
	if rec == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanUpTimeout)
	defer cancel()
	s.logger().Debug("deleting DNS record", zap.String("zone", rec.Zone), zap.String("name", rec.Name))
	if _, err := s.Provider.DeleteRecords(ctx, rec.Zone, []libdns.Record{rec.libdnsRecord()}); err != nil {
		return fmt.Errorf("deleting TXT record %s from zone %s: %w", rec.Name, rec.Zone, err)
	}
	return nil
}

// libdnsRecord is the record to delete: the one the provider returned, or else
// any TXT record at the name with the value (libdns: TTL 0 matches any).
func (r *Record) libdnsRecord() libdns.Record {
	if r.provided != nil {
		return r.provided
	}
	return libdns.TXT{Name: libdns.RelativeName(r.Name, r.Zone), Text: r.Value}
}

// resolvers are the configured resolvers, or the system's, with ports.
func (s *Solver) resolvers() []string {
	if len(s.Resolvers) == 0 && len(s.bootstrap) > 0 {
		return certmagic.RecursiveNameservers(s.bootstrap)
	}
	return certmagic.RecursiveNameservers(s.Resolvers)
}

func (s *Solver) logger() *zap.Logger {
	if s.Logger == nil {
		return zap.NewNop()
	}
	return s.Logger
}
