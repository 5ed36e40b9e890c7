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
//	    max_concurrent_requests <n>
//	    require_csr_key
//	    delete_replaced
//	    trusted_roots        <pem_files...>
//	    network_proxy        <module> [<args>] {
//	        ...
//	    }
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
// network_proxy names a caddy.network_proxy module as the reverse proxy's
// transport does (`network_proxy url http://proxy.internal:3128`,
// `network_proxy none`); it is the ACME issuer's JSON network_proxy.
//
// It is used as `issuer sslci ...` in a site's tls directive and as
// `cert_issuer sslci ...` in the global options. The token is usually a
// placeholder such as {env.SSLCI_TOKEN}.
//
// Only the syntax is checked here; what the values mean is checked once,
// by Provision, for the Caddyfile and JSON alike. No error quotes a token
// of the block: a literal API token could be any of them.
func (iss *Issuer) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume issuer name
	if d.NextArg() {
		iss.Token = d.Val()
		if d.NextArg() {
			return errTokenArgs(d)
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
				return errTokenArgs(d)
			}
		case "endpoint":
			if !d.AllArgs(&iss.Endpoint) {
				return d.ArgErr()
			}
		case "method":
			if !d.AllArgs(&iss.Method) {
				return d.ArgErr()
			}
		case "timeout":
			if err := parseDuration(d, &iss.Timeout); err != nil {
				return err
			}
		case "verification_timeout":
			if err := parseDuration(d, &iss.VerificationTimeout); err != nil {
				return err
			}
		case "max_concurrent_requests":
			var n string
			if !d.AllArgs(&n) {
				return d.ArgErr()
			}
			v, err := strconv.Atoi(n)
			if err != nil {
				return d.Errf("invalid max_concurrent_requests %q: not a number", n)
			}
			iss.MaxConcurrentRequests = v
		case "require_csr_key":
			if d.NextArg() {
				return d.ArgErr()
			}
			iss.RequireCSRKey = true
		case "delete_replaced":
			if d.NextArg() {
				return d.ArgErr()
			}
			iss.DeleteReplaced = true
		case "trusted_roots":
			if iss.TrustedRootsPEMFiles = d.RemainingArgs(); len(iss.TrustedRootsPEMFiles) == 0 {
				return d.ArgErr()
			}
		case "network_proxy":
			if !d.NextArg() {
				return d.Err("network_proxy needs a module name, e.g. `network_proxy url http://proxy.internal:3128`")
			}
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "caddy.network_proxy."+name)
			if err != nil {
				return err
			}
			iss.NetworkProxyRaw = caddyconfig.JSONModuleObject(unm, "from", name, nil)
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
			if err != nil {
				return d.Errf("invalid port %q: not a number", port)
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
			if err := parseDuration(d, &iss.dnsConfig().PropagationTimeout); err != nil {
				return err
			}
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
			// Not quoted: a token put alone on its line would be shown.
			return d.Err("unrecognized sslci issuer subdirective (not shown, in case it is a misplaced token)")
		}
	}
	return nil
}

// errTokenArgs is the Caddyfile error for a token given with other
// arguments: it shows none of them.
func errTokenArgs(d *caddyfile.Dispenser) error {
	return d.Err("the token takes exactly one argument (the arguments are not shown)")
}

func (iss *Issuer) dnsConfig() *caddytls.DNSChallengeConfig {
	if iss.DNS == nil {
		iss.DNS = new(caddytls.DNSChallengeConfig)
	}
	return iss.DNS
}

// parseDuration reads a duration argument. "-1" is read as -1ns, as the
// ACME issuer reads `propagation_timeout -1` (do not check propagation);
// Provision refuses it anywhere else.
func parseDuration(d *caddyfile.Dispenser, out *caddy.Duration) error {
	var s string
	if !d.AllArgs(&s) {
		return d.ArgErr()
	}
	if s == "-1" {
		*out = -1
		return nil
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("invalid duration %q: %v", s, err)
	}
	*out = caddy.Duration(dur)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Issuer)(nil)
