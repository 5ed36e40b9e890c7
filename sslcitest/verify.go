package sslcitest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

const (
	// checkTimeout bounds one HTTP fetch or DNS lookup, as a CA's
	// validation would be bounded.
	checkTimeout = 10 * time.Second
	// maxChallengeBody caps what is read of a challenge response; a key
	// authorization is under 100 bytes.
	maxChallengeBody = 8 << 10
	// excerptLen is how much of a wrong body an error message quotes.
	excerptLen = 64
)

func challengePath(token string) string { return "/.well-known/acme-challenge/" + token }

// dnsRecord is where the TXT record goes: ACME's name, without a wildcard's
// "*." (the record for *.example.com is _acme-challenge.example.com).
func dnsRecord(domain string) string {
	return "_acme-challenge." + strings.TrimPrefix(domain, "*.")
}

// checkHTTP fetches the challenge file the way an ACME CA does: plain HTTP,
// Host the domain, no proxy, no redirects followed, the body compared after
// trimming whitespace. Every connection goes to HTTPChallengeAddr when set.
func (s *Server) checkHTTP(ctx context.Context, domain, token, keyAuth string) error {
	s.mu.Lock()
	addr := s.httpAddr
	s.mu.Unlock()
	if addr == "" {
		addr = net.JoinHostPort(domain, "80")
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()

	target := "http://" + domain + challengePath(token)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "sslci-sim validation")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the message already
		}
		return fmt.Errorf("fetching %s: %v", target, err) // names the address dialled
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxChallengeBody))
	if err != nil {
		return fmt.Errorf("reading %s: %v", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("got HTTP %d from %s", resp.StatusCode, target)
		if loc := resp.Header.Get("Location"); loc != "" {
			msg += fmt.Sprintf(" redirecting to %q (redirects are not followed)", excerpt([]byte(loc)))
		}
		return fmt.Errorf("%s, body %s", msg, excerpt(body))
	}
	if strings.TrimSpace(string(body)) != keyAuth {
		return fmt.Errorf("got HTTP 200 from %s but body %s does not match the key authorization", target, excerpt(body))
	}
	return nil
}

// excerpt quotes the start of a body for an error message, escaped so that
// nothing the other side sent can forge log lines.
func excerpt(b []byte) string {
	if len(b) <= excerptLen {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%q (first %d of %d bytes)", b[:excerptLen], excerptLen, len(b))
}

// checkDNS looks up the TXT record of the domain; any value equal to want
// passes.
func (s *Server) checkDNS(ctx context.Context, domain, want string) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	// Fully qualified (trailing dot) so that no search list applies.
	name := dnsRecord(domain) + "."
	values, err := s.lookupTXT(ctx, name)
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound, err == nil && len(values) == 0:
		return fmt.Errorf("no TXT record at %s", name)
	case err != nil:
		return fmt.Errorf("TXT lookup of %s: %v", name, err)
	case !slices.Contains(values, want):
		return fmt.Errorf("TXT record at %s has %q, none is the expected %q", name, values, want)
	}
	return nil
}

// resolverFor is the resolver TXT checks use: the system's when server is
// empty, else Go's own resolver sending every query (UDP, or TCP on
// truncation, as the resolver chooses) to server.
func resolverFor(server string) *net.Resolver {
	if server == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		},
	}
}
