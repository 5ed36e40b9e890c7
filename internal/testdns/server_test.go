package testdns

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sslci/caddy-sslci/internal/dnstxt"
)

func start(t *testing.T, zones ...string) *Server {
	t.Helper()
	s, err := Start(zones...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// query asks s over network ("udp" or "tcp") with a 1232-byte EDNS buffer.
func query(t *testing.T, s *Server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return resp
}

func TestAnswers(t *testing.T) {
	s := start(t, "example.test", "sub.example.test")
	if err := s.AppendTXT("_acme-challenge.deep.example.test", "one", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendTXT("_acme-challenge.deep.example.test.", "two", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendTXT("elsewhere.invalid", "x", 0); err == nil {
		t.Error("AppendTXT outside the zones: no error")
	}

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			r := query(t, s, network, "example.test.", dns.TypeSOA)
			if !r.Authoritative || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("SOA: %v", r)
			}
			if soa := r.Answer[0].(*dns.SOA); soa.Hdr.Name != "example.test." || soa.Ns != "ns1.example.test." {
				t.Errorf("SOA: %v", soa)
			}

			r = query(t, s, network, "example.test.", dns.TypeNS)
			if len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "ns1.example.test." || len(r.Extra) == 0 {
				t.Fatalf("NS: %v", r)
			}
			r = query(t, s, network, "ns1.example.test.", dns.TypeA)
			if len(r.Answer) != 1 || !r.Answer[0].(*dns.A).A.Equal([]byte{127, 0, 0, 1}) {
				t.Fatalf("A of the NS: %v", r)
			}

			// The closest zone answers.
			r = query(t, s, network, "sub.example.test.", dns.TypeSOA)
			if len(r.Answer) != 1 || r.Answer[0].Header().Name != "sub.example.test." {
				t.Fatalf("SOA of the subzone: %v", r)
			}

			r = query(t, s, network, "_ACME-challenge.deep.example.test.", dns.TypeTXT)
			if got := txtValues(r); !r.Authoritative || strings.Join(got, ",") != "one,two" {
				t.Fatalf("TXT: %q in %v", got, r)
			}
			if ttl := r.Answer[0].Header().Ttl; ttl != 60 {
				t.Errorf("TTL %d, want 60", ttl)
			}

			r = query(t, s, network, "_acme-challenge.deep.example.test.", dns.TypeA)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
				t.Errorf("NODATA: %v", r)
			}
			r = query(t, s, network, "deep.example.test.", dns.TypeTXT)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
				t.Errorf("empty non-terminal: %v", r)
			}
			r = query(t, s, network, "missing.example.test.", dns.TypeTXT)
			if r.Rcode != dns.RcodeNameError || !r.Authoritative || len(r.Ns) != 1 {
				t.Errorf("NXDOMAIN: %v", r)
			}
			r = query(t, s, network, "example.org.", dns.TypeSOA)
			if r.Rcode != dns.RcodeRefused || r.Authoritative {
				t.Errorf("outside the zones: %v", r)
			}
		})
	}

	if !s.DeleteTXT("_acme-challenge.deep.example.test", "one") || s.DeleteTXT("_acme-challenge.deep.example.test", "one") {
		t.Error("DeleteTXT reported wrongly")
	}
	if got := s.TXT("_acme-challenge.deep.example.test"); len(got) != 1 || got[0] != "two" {
		t.Errorf("after delete: %q", got)
	}
	if s.Queries() != 2*9 {
		t.Errorf("Queries() = %d, want %d", s.Queries(), 2*9)
	}
}

// A long value with quotes, backslashes and control bytes survives the
// 255-byte strings and miekg/dns's escaping.
func TestLongValue(t *testing.T) {
	s := start(t, "long.test")
	value := strings.Repeat(`a"b\c`+"\x01", 60)
	if err := s.AppendTXT("v.long.test", value, 0); err != nil {
		t.Fatal(err)
	}
	r := query(t, s, "udp", "v.long.test.", dns.TypeTXT)
	if len(r.Answer) != 1 || len(r.Answer[0].(*dns.TXT).Txt) != 2 {
		t.Fatalf("want one record of two strings: %v", r)
	}
	if got := txtValues(r)[0]; got != dnstxt.Escape(value) {
		t.Errorf("got %q, want %q", got, dnstxt.Escape(value))
	}
}

func TestTruncation(t *testing.T) {
	s := start(t, "big.test")
	for i := range 10 {
		if err := s.AppendTXT("big.test", strings.Repeat(string(rune('a'+i)), 200), 0); err != nil {
			t.Fatal(err)
		}
	}
	if r := query(t, s, "udp", "big.test.", dns.TypeTXT); !r.Truncated || len(r.Answer) == 10 {
		t.Errorf("UDP: truncated %v with %d records", r.Truncated, len(r.Answer))
	}
	if r := query(t, s, "tcp", "big.test.", dns.TypeTXT); r.Truncated || len(r.Answer) != 10 {
		t.Errorf("TCP: truncated %v with %d records", r.Truncated, len(r.Answer))
	}
}

func TestDelay(t *testing.T) {
	s := start(t, "delay.test")
	s.SetDelay(300 * time.Millisecond)
	if err := s.AppendTXT("x.delay.test", "v", 0); err != nil {
		t.Fatal(err)
	}
	if r := query(t, s, "udp", "x.delay.test.", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before the delay: %v", r)
	}
	if got := s.TXT("x.delay.test"); len(got) != 1 {
		t.Fatalf("TXT() = %q, want the stored record", got)
	}
	deadline := time.Now().Add(3 * time.Second)
	for len(txtValues(query(t, s, "udp", "x.delay.test.", dns.TypeTXT))) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the record never became visible")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHidden(t *testing.T) {
	s := start(t, "hidden.test")
	s.SetHidden(true)
	if err := s.AppendTXT("x.hidden.test", "v", 0); err != nil {
		t.Fatal(err)
	}
	if r := query(t, s, "tcp", "x.hidden.test.", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Errorf("hidden: %v", r)
	}
	if got := s.TXT("x.hidden.test"); len(got) != 1 {
		t.Errorf("TXT() = %q, want the stored record", got)
	}
	s.SetHidden(false)
	if got := txtValues(query(t, s, "tcp", "x.hidden.test.", dns.TypeTXT)); len(got) != 1 {
		t.Errorf("no longer hidden: %q", got)
	}
}

func TestStartClose(t *testing.T) {
	if _, err := Start(); err == nil {
		t.Error("Start without a zone: no error")
	}
	s := start(t, "close.test")
	if lookupServer(s.Addr()) != s {
		t.Fatal("not registered")
	}
	s.Close()
	s.Close()
	if lookupServer(s.Addr()) != nil {
		t.Error("still registered after Close")
	}
}

func txtValues(r *dns.Msg) []string {
	var values []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			values = append(values, strings.Join(txt.Txt, ""))
		}
	}
	return values
}
