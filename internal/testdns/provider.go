package testdns

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/libdns/libdns"
)

func init() {
	caddy.RegisterModule(Provider{})
}

// Provider is the Caddy module dns.providers.testdns: a libdns provider
// for the TXT records of a Server running in the same process, so that
// tests configure it exactly like a caddy-dns/* plugin:
//
//	"provider": {"name": "testdns", "server": "127.0.0.1:NNNN"}
type Provider struct {
	// The address of the Server, as returned by its Addr method.
	Server string `json:"server,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Provider) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "dns.providers.testdns",
		New: func() caddy.Module { return new(Provider) },
	}
}

// Provision replaces placeholders in the server address.
func (p *Provider) Provision(caddy.Context) error {
	p.Server = caddy.NewReplacer().ReplaceAll(p.Server, "")
	if p.Server == "" {
		return errors.New("testdns: missing server address")
	}
	return nil
}

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens. Syntax:
//
//	testdns [<server>] {
//	    server <server>
//	}
func (p *Provider) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the provider's name
	if d.NextArg() {
		p.Server = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "server":
			if !d.AllArgs(&p.Server) {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized subdirective '%s'", d.Val())
		}
	}
	if p.Server == "" {
		return d.Err("missing server address")
	}
	return nil
}

// GetRecords returns the TXT records stored in zone, visible or not.
func (p *Provider) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	srv, err := p.server(ctx)
	if err != nil {
		return nil, err
	}
	var out []libdns.Record
	for _, rec := range srv.within(zone) {
		out = append(out, rec.libdnsRecord(zone))
	}
	return out, nil
}

// AppendRecords adds TXT records to zone and returns them as stored.
func (p *Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return p.write(ctx, zone, recs, false)
}

// SetRecords makes the given TXT records the only ones at their names.
func (p *Provider) SetRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return p.write(ctx, zone, recs, true)
}

// write stores recs in zone, once it has checked that every one is a TXT
// record; with replace, the records at their names are removed first.
func (p *Provider) write(ctx context.Context, zone string, recs []libdns.Record, replace bool) ([]libdns.Record, error) {
	srv, err := p.server(ctx)
	if err != nil {
		return nil, err
	}
	stored := make([]record, len(recs))
	for i, r := range recs {
		rr := r.RR()
		if rr.Type != "TXT" {
			return nil, fmt.Errorf("testdns: only TXT records are supported, not %q", rr.Type)
		}
		stored[i] = record{name: libdns.AbsoluteName(rr.Name, zone), value: rr.Data, ttl: rr.TTL}
	}
	if replace {
		for _, rec := range stored {
			srv.remove(rec.name, "", 0)
		}
	}
	var out []libdns.Record
	for _, rec := range stored {
		if err := srv.AppendTXT(rec.name, rec.value, rec.ttl); err != nil {
			return out, err
		}
		out = append(out, rec.libdnsRecord(zone))
	}
	return out, nil
}

// DeleteRecords deletes the TXT records matching recs (an empty value or
// TTL matches any) and returns those it deleted.
func (p *Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	srv, err := p.server(ctx)
	if err != nil {
		return nil, err
	}
	var out []libdns.Record
	for _, r := range recs {
		rr := r.RR()
		if rr.Type != "" && rr.Type != "TXT" {
			continue // none stored, so nothing matches
		}
		for _, rec := range srv.remove(libdns.AbsoluteName(rr.Name, zone), rr.Data, rr.TTL) {
			out = append(out, rec.libdnsRecord(zone))
		}
	}
	return out, nil
}

func (p *Provider) server(ctx context.Context) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	srv := lookupServer(p.Server)
	if srv == nil {
		return nil, fmt.Errorf("testdns: no server running at %q", p.Server)
	}
	return srv, nil
}

// libdnsRecord is rec as the provider returns it: named relative to zone.
func (rec record) libdnsRecord(zone string) libdns.Record {
	return libdns.TXT{
		Name: libdns.RelativeName(rec.name, zone),
		TTL:  rec.ttl.Truncate(time.Second),
		Text: rec.value,
	}
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Provider)(nil)
	_ caddyfile.Unmarshaler = (*Provider)(nil)
	_ libdns.RecordGetter   = (*Provider)(nil)
	_ libdns.RecordAppender = (*Provider)(nil)
	_ libdns.RecordSetter   = (*Provider)(nil)
	_ libdns.RecordDeleter  = (*Provider)(nil)
)
