// Package dnstxt holds the one TXT escaping shared by the DNS check
// (internal/dnsverify) and the test DNS server (internal/testdns): if it
// were written twice, a bug in both copies would cancel itself out.
package dnstxt

import (
	"fmt"
	"strings"
)

// Escape puts raw bytes in the presentation form miekg/dns keeps TXT
// strings in (quotes and backslashes escaped, unprintable bytes as \DDD):
// it unescapes them when packing a record, and gives them escaped when
// unpacking one. Escaping works byte by byte, so the escaped strings of a
// record join to the escaped value.
func Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
