package issuance

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/ledger"
)

// This file decides which names SSLCI can be asked for: the root
// package's PreCheck (certmagic.PreChecker) refuses the others before any
// API request, and Issue again.

// CheckNames refuses names SSLCI cannot verify with method: IP addresses,
// and wildcards over HTTP.
func CheckNames(names []string, method string) error {
	for _, name := range names {
		if err := CheckName(name, method); err != nil {
			return err
		}
	}
	return nil
}

// CheckName is CheckNames for one name.
func CheckName(name, method string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case net.ParseIP(strings.Trim(name, "[]")) != nil:
		return fmt.Errorf("%s: SSLCI issues certificates for domain names, not IP addresses", name)
	case strings.Contains(name, "*") && method != api.MethodDNS:
		return fmt.Errorf("%s: wildcard names can only be verified by DNS; configure a DNS provider (`dns <provider> ...`)", name)
	case strings.Contains(name, "*") && (!strings.HasPrefix(name, "*.") || strings.Count(name, "*") > 1):
		return fmt.Errorf("%s: only a leading \"*.\" label is allowed in a wildcard name", name)
	}
	return nil
}

// CSRNames returns the CSR's DNS names, lowercased and without duplicates;
// a CSR naming IPs, emails or URIs is refused. certmagic puts the names it
// manages in the CSR's DNSNames (IPs would be in IPAddresses).
func CSRNames(csr *x509.CertificateRequest) ([]string, error) {
	if len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, errors.New("the CSR names IP addresses, email addresses or URIs; SSLCI issues for domain names only")
	}
	var names []string
	for _, n := range csr.DNSNames {
		n = ledger.NormalName(n)
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("the CSR has no DNS names")
	}
	return names, nil
}
