package sslci

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/sslci/caddy-sslci/api"
)

// This file decides which names SSLCI can be asked for. certmagic calls
// PreCheck (certmagic.PreChecker) before it asks an issuer to Issue, and
// moves on to the policy's next issuer when it fails: a name refused here
// costs no API request.

// PreCheck refuses, before any API request, names SSLCI cannot verify with
// the configured method: IP addresses, and wildcards over HTTP.
func (iss *Issuer) PreCheck(_ context.Context, names []string, _ bool) error {
	if err := iss.checkNames(names); err != nil {
		return fmt.Errorf("sslci: %w", err)
	}
	return nil
}

func (iss *Issuer) checkNames(names []string) error {
	for _, name := range names {
		if err := iss.checkName(name); err != nil {
			return err
		}
	}
	return nil
}

func (iss *Issuer) checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case net.ParseIP(strings.Trim(name, "[]")) != nil:
		return fmt.Errorf("%s: SSLCI issues certificates for domain names, not IP addresses", name)
	case strings.Contains(name, "*") && iss.Method != api.MethodDNS:
		return fmt.Errorf("%s: wildcard names can only be verified by DNS; configure a DNS provider (`dns <provider> ...`)", name)
	case strings.Contains(name, "*") && (!strings.HasPrefix(name, "*.") || strings.Count(name, "*") > 1):
		return fmt.Errorf("%s: only a leading \"*.\" label is allowed in a wildcard name", name)
	}
	return nil
}

// csrNames returns the CSR's DNS names, lowercased and without duplicates;
// a CSR naming IPs, emails or URIs is refused. certmagic puts the names it
// manages in the CSR's DNSNames (IPs would be in IPAddresses).
func csrNames(csr *x509.CertificateRequest) ([]string, error) {
	if len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, errors.New("the CSR names IP addresses, email addresses or URIs; SSLCI issues for domain names only")
	}
	var names []string
	for _, n := range csr.DNSNames {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("the CSR has no DNS names")
	}
	return names, nil
}
