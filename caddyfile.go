package sslci

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

// UnmarshalCaddyfile sets up the issuer from Caddyfile tokens. Syntax:
//
//	... sslci [<token>] {
//	    token                <token>
//	    endpoint             <url>
//	    method               http|dns
//	    timeout              <duration>
//	    verification_timeout <duration>
//	    require_csr_key
//	    listen_host          <host>
//	    alt_http_port        <port>
//	    dns                  <provider_name> [<options>]
//	    propagation_delay    <duration>
//	    propagation_timeout  <duration>
//	    resolvers            <dns_servers...>
//	    dns_ttl              <duration>
//	    override_domain      <domain>
//	}
//
// The DNS subdirectives are the ACME issuer's (dns_challenge_override_domain
// is accepted for override_domain), so a block moves from one to the other.
//
// It is used as `issuer sslci ...` in a site's tls directive and as
// `cert_issuer sslci ...` in the global options. The token is usually a
// placeholder such as {env.SSLCI_TOKEN}.
func (iss *Issuer) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume issuer name
	if d.NextArg() {
		iss.Token = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("%s is already set", sub)
		}
		seen[sub] = true
		switch sub {
		case "token":
			if iss.Token != "" {
				return d.Err("the token is already set (as the issuer's argument)")
			}
			if !d.AllArgs(&iss.Token) {
				return d.ArgErr()
			}
		case "endpoint":
			if !d.AllArgs(&iss.Endpoint) {
				return d.ArgErr()
			}
		case "method":
			if !d.AllArgs(&iss.Method) {
				return d.ArgErr()
			}
			if iss.Method != "http" && iss.Method != "dns" {
				return d.Errf("unknown method %q: want http or dns", iss.Method)
			}
		case "timeout":
			if err := parseDuration(d, &iss.Timeout); err != nil {
				return err
			}
		case "verification_timeout":
			if err := parseDuration(d, &iss.VerificationTimeout); err != nil {
				return err
			}
		case "require_csr_key":
			if d.NextArg() {
				return d.ArgErr()
			}
			iss.RequireCSRKey = true
		case "listen_host":
			if !d.AllArgs(&iss.ListenHost) {
				return d.ArgErr()
			}
		case "alt_http_port":
			var port string
			if !d.AllArgs(&port) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(port)
			if err != nil || n <= 0 || n > 65535 {
				return d.Errf("invalid port %q", port)
			}
			iss.AlternateHTTPPort = n
		case "dns":
			if !d.NextArg() {
				return d.Err("dns needs a provider name, e.g. `dns cloudflare {env.CF_API_TOKEN}`")
			}
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "dns.providers."+name)
			if err != nil {
				return err
			}
			iss.dnsConfig().ProviderRaw = caddyconfig.JSONModuleObject(unm, "name", name, nil)
		case "propagation_delay":
			if err := parseDuration(d, &iss.dnsConfig().PropagationDelay); err != nil {
				return err
			}
		case "propagation_timeout":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			if s == "-1" { // as for the ACME issuer: do not check propagation
				iss.dnsConfig().PropagationTimeout = -1
				break
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("invalid duration %q: %v", s, err)
			}
			iss.dnsConfig().PropagationTimeout = caddy.Duration(dur)
		case "resolvers":
			resolvers := d.RemainingArgs()
			if len(resolvers) == 0 {
				return d.ArgErr()
			}
			iss.dnsConfig().Resolvers = resolvers
		case "dns_ttl":
			if err := parseDuration(d, &iss.dnsConfig().TTL); err != nil {
				return err
			}
		case "override_domain", "dns_challenge_override_domain": // the ACME issuer's name too, so its block moves unchanged
			if !d.AllArgs(&iss.dnsConfig().OverrideDomain) {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized sslci issuer subdirective %q", sub)
		}
	}
	if iss.Method == "http" && iss.DNS != nil {
		return d.Err("method http cannot be combined with DNS challenge settings")
	}
	return nil
}

func (iss *Issuer) dnsConfig() *caddytls.DNSChallengeConfig {
	if iss.DNS == nil {
		iss.DNS = new(caddytls.DNSChallengeConfig)
	}
	return iss.DNS
}

func parseDuration(d *caddyfile.Dispenser, out *caddy.Duration) error {
	var s string
	if !d.AllArgs(&s) {
		return d.ArgErr()
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("invalid duration %q: %v", s, err)
	}
	if dur < 0 {
		return d.Errf("duration %q must not be negative", s)
	}
	*out = caddy.Duration(dur)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Issuer)(nil)
