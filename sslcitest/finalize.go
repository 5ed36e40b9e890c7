package sslcitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"time"
)

// maxDomains caps the names of one certificate. Not documented; 100 is
// Let's Encrypt's limit.
const maxDomains = 100

// detailsTime is the documented format of valid_from / valid_to (UTC).
const detailsTime = "2006-01-02 15:04:05"

// finalizeResponse is the documented body; key is left out when the
// certificate is for the client's CSR.
type finalizeResponse struct {
	Status  bool    `json:"status"`
	Key     string  `json:"key,omitempty"`
	CSR     string  `json:"csr"`
	Crt     string  `json:"crt"`
	CA      string  `json:"ca"`
	Details details `json:"details"`
}

type details struct {
	Subject struct {
		CN string `json:"CN"`
	} `json:"subject"`
	ValidFrom string `json:"valid_from"`
	ValidTo   string `json:"valid_to"`
	SAN       string `json:"san"`
}

// finalize is POST action=finalize: one certificate for domains this
// account verified within the window. Verifications are not consumed: the
// documentation's "within the last 29 days" lets them be reused.
func (s *Server) finalize(c *call) (any, error) {
	domains, err := finalizeDomains(c.p)
	if err != nil {
		return nil, err
	}
	now := s.now()
	s.mu.Lock()
	for _, d := range domains {
		at, ok := s.store.verified[c.account][d]
		if !ok {
			err = badRequest("domain %s is not verified: verify it with POST and PUT first", d)
		} else if now.Sub(at) > s.opts.VerificationWindow {
			err = badRequest("domain %s is not verified: its verification of %s is older than %s", d, at.UTC().Format(detailsTime), s.opts.VerificationWindow)
		}
		if err != nil {
			break
		}
	}
	signCSR := s.signCSR
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}

	resp := finalizeResponse{Status: true}
	var pub crypto.PublicKey
	var key crypto.Signer // the key made here, if any
	csrText, _, err := c.p.str("csr")
	switch {
	case err != nil && signCSR:
		return nil, err
	case signCSR && csrText != "":
		if pub, err = csrPublicKey(csrText, domains); err != nil {
			return nil, err
		}
		resp.CSR = csrText
	default:
		// As documented: the service makes the key and CSR itself.
		if key, resp.Key, resp.CSR, err = newKeyAndCSR(domains); err != nil {
			return nil, err
		}
		pub = key.Public()
	}

	names, notBefore, notAfter := domains, now.Add(-time.Minute), now.Add(s.opts.Validity)
	fault := c.fault()
	switch fault {
	case FaultWrongNames:
		names = []string{"wrong.invalid"}
	case FaultWrongKey:
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		pub = other.Public()
	case FaultExpired:
		notAfter = now.Add(-time.Hour)
		notBefore = notAfter.Add(-s.opts.Validity)
	}
	leaf, der, caPEM, err := s.sign(fault, key, pub, names, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	resp.CA = string(caPEM)
	s.mu.Lock()
	s.store.addCert(c.account, Certificate{Domains: domains, AddTime: now, EndTime: leaf.NotAfter, Leaf: leaf})
	s.mu.Unlock()

	resp.Crt = string(certPEM(der))
	if fault == FaultBrokenPEM {
		garbage := make([]byte, len(der))
		rand.Read(garbage)
		resp.Crt = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: garbage}))
	}
	resp.Details.Subject.CN = leaf.Subject.CommonName
	resp.Details.ValidFrom = leaf.NotBefore.UTC().Format(detailsTime)
	resp.Details.ValidTo = leaf.NotAfter.UTC().Format(detailsTime)
	resp.Details.SAN = "DNS:" + strings.Join(leaf.DNSNames, ", DNS:")
	return resp, nil
}

// sign makes the leaf and the "ca" of a finalize answer: from the
// simulator's intermediate, or as the fault asks, self-signed (its own
// "ca") or from a throwaway CA.
func (s *Server) sign(fault Fault, key crypto.Signer, pub crypto.PublicKey, names []string, notBefore, notAfter time.Time) (*x509.Certificate, []byte, []byte, error) {
	ca := s.ca
	switch fault {
	case FaultSelfSigned:
		leaf, der, err := selfSigned(key, pub, names, notBefore, notAfter)
		return leaf, der, certPEM(der), err
	case FaultUnknownRoot:
		var err error
		if ca, err = newAuthority(notBefore, time.Now()); err != nil {
			return nil, nil, nil, err
		}
	}
	leaf, der, err := ca.issue(pub, names, nil, notBefore, notAfter)
	return leaf, der, ca.interPEM, err
}

// finalizeDomains is the domains parameter: a non-empty JSON array of
// names, normalized and de-duplicated in order (the first is the CN).
func finalizeDomains(p params) ([]string, error) {
	raw, ok := p.raw("domains")
	if !ok {
		return nil, badRequest("missing parameter domains")
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, badRequest("invalid parameter domains: must be an array of strings")
	}
	if len(list) == 0 {
		return nil, badRequest("invalid parameter domains: is empty")
	}
	var domains []string
	seen := make(map[string]bool)
	for _, name := range list {
		d, err := normalizeDomain(name)
		if err != nil {
			return nil, badRequest("invalid parameter domains: %q %v", name, err)
		}
		if !seen[d] {
			seen[d] = true
			domains = append(domains, d)
		}
	}
	if len(domains) > maxDomains {
		return nil, badRequest("invalid parameter domains: more than %d domains", maxDomains)
	}
	return domains, nil
}
