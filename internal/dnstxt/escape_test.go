package dnstxt

import (
	"bytes"
	"testing"

	"github.com/miekg/dns"
)

// Escape is checked against the wire format, not against itself: a TXT
// record holding the escaped value must pack to the raw bytes (one
// length-prefixed string), and unpack to the escaped value again.
func TestEscapeMatchesTheWire(t *testing.T) {
	var all []byte
	for c := range 256 {
		all = append(all, byte(c))
	}
	for _, raw := range []string{"", "plain-value_09", `quote " and backslash \`, "tab\tnew\nline", string(all[:255]), string(all[1:])} {
		rr := &dns.TXT{Hdr: dns.RR_Header{Name: "x.test.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{Escape(raw)}}
		buf := make([]byte, 1024)
		n, err := dns.PackRR(rr, buf, 0, nil, false)
		if err != nil {
			t.Fatalf("%q: packing: %v", raw, err)
		}
		rdata := buf[n-int(rr.Hdr.Rdlength) : n]
		want := append([]byte{byte(len(raw))}, raw...)
		if !bytes.Equal(rdata, want) {
			t.Errorf("%q: the wire holds %q, want %q", raw, rdata, want)
		}
		back, _, err := dns.UnpackRR(buf[:n], 0)
		if err != nil {
			t.Fatalf("%q: unpacking: %v", raw, err)
		}
		if got := back.(*dns.TXT).Txt[0]; got != Escape(raw) {
			t.Errorf("%q: unpacked as %q, want %q", raw, got, Escape(raw))
		}
	}
}
