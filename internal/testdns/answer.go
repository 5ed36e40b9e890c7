package testdns

import (
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// The fixed parts of every zone. SOA refresh is 0 because certmagic caches
// zone lookups process-wide by name for that long: tests that serve the same
// names from different servers must not see each other's zones.
const (
	fixedTTL    = 3600
	negativeTTL = 1
	soaRefresh  = 0
)

// ServeDNS answers one request; it implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	s.queries.Add(1)
	m := s.answer(r)
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
		m.SetEdns0(opt.UDPSize(), false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(size) // sets TC, so that clients retry over TCP
	}
	w.WriteMsg(m)
}

func (s *Server) answer(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := r.Question[0]
	name := dns.CanonicalName(q.Name)
	zone := s.zoneOf(name)
	if zone == "" {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true

	ans, extra, exists := s.lookup(zone, name, q.Qtype)
	switch {
	case !exists:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa(zone)}
	case len(ans) == 0:
		m.Ns = []dns.RR{soa(zone)}
	default:
		m.Answer, m.Extra = ans, extra
	}
	return m
}

// lookup finds the records of type qtype at name in zone, and whether the
// name exists at all (NODATA rather than NXDOMAIN).
func (s *Server) lookup(zone, name string, qtype uint16) (ans, extra []dns.RR, exists bool) {
	ns := "ns1." + zone
	switch name {
	case zone:
		exists = true
		switch qtype {
		case dns.TypeSOA:
			ans = append(ans, soa(zone))
		case dns.TypeNS:
			ans = append(ans, &dns.NS{Hdr: header(zone, dns.TypeNS, fixedTTL), Ns: ns})
			extra = append(extra, glue(ns))
		}
	case ns:
		exists = true
		if qtype == dns.TypeA {
			ans = append(ans, glue(ns))
		}
	}

	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rec := range s.records {
		if !s.visible(rec, now) {
			continue
		}
		switch {
		case rec.name == name:
			exists = true
			if qtype == dns.TypeTXT {
				ans = append(ans, rec.rr())
			}
		case strings.HasSuffix(rec.name, "."+name):
			exists = true // an empty non-terminal
		}
	}
	return ans, extra, exists
}

func soa(zone string) *dns.SOA {
	return &dns.SOA{
		Hdr:     header(zone, dns.TypeSOA, fixedTTL),
		Ns:      "ns1." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  1,
		Refresh: soaRefresh,
		Retry:   negativeTTL,
		Expire:  fixedTTL,
		Minttl:  negativeTTL,
	}
}

func glue(ns string) *dns.A {
	return &dns.A{Hdr: header(ns, dns.TypeA, fixedTTL), A: net.IPv4(127, 0, 0, 1)}
}

func header(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}
