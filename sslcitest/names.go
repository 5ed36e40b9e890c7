package sslcitest

import (
	"errors"
	"net"
	"strings"
)

// normalizeDomain lowercases name and checks it is one DNS name a public CA
// would accept: ASCII (punycode) labels of letters, digits and hyphens, at
// least two labels, no IP address, no trailing dot. A leading "*." is kept
// for the caller to allow or refuse. The documentation says only "a single
// domain"; these rules are the usual ACME CA ones.
func normalizeDomain(name string) (string, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	switch {
	case name == "":
		return "", errors.New("is empty")
	case strings.ContainsAny(name, ", \t\n;|"):
		return "", errors.New("must be exactly one domain (verify each domain with its own request)")
	case net.ParseIP(strings.Trim(name, "[]")) != nil:
		return "", errors.New("is an IP address; only domain names are accepted")
	case len(name) > 253:
		return "", errors.New("is longer than 253 characters")
	}
	host := strings.TrimPrefix(name, "*.")
	labels := strings.Split(host, ".")
	if len(labels) < 2 {
		return "", errors.New("must have at least two labels")
	}
	for _, l := range labels {
		if !validLabel(l) {
			return "", errors.New("is not a valid domain name")
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", errors.New("has an all-numeric top-level label")
	}
	return name, nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, c := range []byte(l) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isWildcard(domain string) bool { return strings.HasPrefix(domain, "*.") }
