package testdns

import (
	"fmt"
	"time"

	"github.com/miekg/dns"

	"github.com/sslci/caddy-sslci/internal/dnstxt"
)

// record is a stored TXT record.
type record struct {
	name    string // canonical FQDN
	value   string // raw bytes, unescaped
	ttl     time.Duration
	visible time.Time // when it starts being answered
}

// AppendTXT stores a TXT record at name (a FQDN, trailing dot optional). It
// is answered once the delay set by SetDelay has passed, unless hidden.
// Appending a record that is already stored changes nothing.
func (s *Server) AppendTXT(name, value string, ttl time.Duration) error {
	name = dns.CanonicalName(name)
	if s.zoneOf(name) == "" {
		return fmt.Errorf("testdns: %s is in none of the zones %v", name, s.zones)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rec := range s.records {
		if rec.name == name && rec.value == value {
			return nil
		}
	}
	s.records = append(s.records, record{
		name:    name,
		value:   value,
		ttl:     ttl.Truncate(time.Second),
		visible: time.Now().Add(time.Duration(s.delay.Load())),
	})
	return nil
}

// DeleteTXT removes the TXT records at name with that value (all of them if
// value is "") and reports whether there were any.
func (s *Server) DeleteTXT(name, value string) bool {
	return len(s.remove(dns.CanonicalName(name), value, 0)) > 0
}

// TXT returns the values stored at name, including those not answered yet.
func (s *Server) TXT(name string) []string {
	name = dns.CanonicalName(name)
	var values []string
	for _, rec := range s.matching(func(rec record) bool { return rec.name == name }) {
		values = append(values, rec.value)
	}
	return values
}

// SetDelay makes records appended from now on visible only d after.
func (s *Server) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// SetHidden keeps every TXT record out of the answers while hidden is true:
// a record that never appears.
func (s *Server) SetHidden(hidden bool) { s.hidden.Store(hidden) }

// remove deletes the records at name matching value and ttl ("" and 0 match
// any) and returns them.
func (s *Server) remove(name, value string, ttl time.Duration) []record {
	ttl = ttl.Truncate(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	var removed []record
	kept := s.records[:0]
	for _, rec := range s.records {
		if rec.name == name && (value == "" || rec.value == value) && (ttl == 0 || rec.ttl == ttl) {
			removed = append(removed, rec)
			continue
		}
		kept = append(kept, rec)
	}
	s.records = kept
	return removed
}

// within returns the records stored in zone.
func (s *Server) within(zone string) []record {
	zone = dns.CanonicalName(zone)
	return s.matching(func(rec record) bool { return dns.IsSubDomain(zone, rec.name) })
}

// matching returns the stored records for which keep is true.
func (s *Server) matching(keep func(record) bool) []record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []record
	for _, rec := range s.records {
		if keep(rec) {
			recs = append(recs, rec)
		}
	}
	return recs
}

// visible reports whether rec is answered at now.
func (s *Server) visible(rec record, now time.Time) bool {
	return !s.hidden.Load() && !now.Before(rec.visible)
}

// rr is rec as an answer: the value cut into the 255-byte strings of the
// wire format, escaped the way miekg/dns holds TXT strings.
func (rec record) rr() *dns.TXT {
	txt := &dns.TXT{Hdr: header(rec.name, dns.TypeTXT, uint32(rec.ttl/time.Second))}
	v := rec.value
	for len(v) > 255 {
		txt.Txt = append(txt.Txt, dnstxt.Escape(v[:255]))
		v = v[255:]
	}
	txt.Txt = append(txt.Txt, dnstxt.Escape(v))
	return txt
}
