package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Op names an API operation, in errors and for Client.Observe. The values
// are those of the simulator's request log (sslcitest.Op).
type Op string

// The operations: all go to the one endpoint URL, told apart by the method.
const (
	OpList     Op = "list"     // GET
	OpRequest  Op = "request"  // POST: request a domain verification
	OpConfirm  Op = "confirm"  // PUT: confirm a domain verification
	OpFinalize Op = "finalize" // POST, action=finalize: create the certificate
	OpDelete   Op = "delete"   // DELETE: a certificate or a pending order
)

// The request bodies, as documented. Every one carries the token.
type (
	verificationBody struct {
		Token  string `json:"token"`
		Domain string `json:"domain"`
		Method string `json:"method"`
	}
	confirmBody struct {
		Token   string `json:"token"`
		Domain  string `json:"domain"`
		Method  string `json:"method"`
		OrderID int64  `json:"order_id,omitempty"`
	}
	finalizeBody struct {
		Token   string   `json:"token"`
		Action  string   `json:"action"`
		Domains []string `json:"domains"`
		CSR     string   `json:"csr,omitempty"` // undocumented: the service may sign it or ignore it
	}
	deleteBody struct {
		Token string `json:"token"`
		Type  string `json:"type"`
		ID    int64  `json:"id"`
	}
)

// List returns the account's certificates and pending orders.
func (c *Client) List(ctx context.Context) (*List, error) {
	var w listWire
	if _, err := c.do(ctx, OpList, http.MethodGet, nil, &w); err != nil {
		return nil, err
	}
	return listFrom(&w), nil
}

func listFrom(w *listWire) *List {
	out := &List{}
	for _, cert := range w.Certificates {
		out.Certificates = append(out.Certificates, CertificateInfo{
			ID:      int64(cert.ID),
			Domains: cert.Domains,
			Added:   time.Unix(int64(cert.AddTime), 0),
			Expires: time.Unix(int64(cert.EndTime), 0),
		})
	}
	for _, o := range w.PendingOrders {
		out.PendingOrders = append(out.PendingOrders, OrderInfo{ID: int64(o.ID), Domains: o.Domains, Status: o.Status})
	}
	return out
}

// RequestVerification asks for a verification of one domain by method
// (MethodHTTP or MethodDNS). It is not retried once the request has reached
// the server, since a repeat would create a second order.
func (c *Client) RequestVerification(ctx context.Context, domain, method string) (*Verification, error) {
	var w verificationWire
	body := verificationBody{Token: c.token, Domain: domain, Method: method}
	if _, err := c.do(ctx, OpRequest, http.MethodPost, body, &w); err != nil {
		return nil, err
	}
	return c.verificationFrom(&w, domain, method)
}

// verificationFrom checks a decoded verification answer and completes what
// the documentation leaves open.
func (c *Client) verificationFrom(w *verificationWire, domain, method string) (*Verification, error) {
	const op = OpRequest
	if w.OrderID <= 0 {
		return nil, malformed(op, "field order_id is missing or not a positive integer")
	}
	if w.Verification == nil {
		return nil, malformed(op, "field verification is missing")
	}
	wv := w.Verification
	v := &Verification{
		Domain:   firstNonEmpty(w.Domain, domain),
		OrderID:  int64(w.OrderID),
		Method:   strings.ToLower(firstNonEmpty(wv.Method, method)),
		Token:    wv.Token,
		Content:  firstNonEmpty(wv.Content, wv.Value),
		FilePath: wv.FilePath,
		URL:      wv.URL,
	}
	if v.Content == "" {
		return nil, malformed(op, "field verification.content is missing")
	}
	switch v.Method {
	case MethodHTTP:
		if v.Token == "" && v.FilePath == "" {
			return nil, malformed(op, "fields verification.token and verification.file_path are both missing")
		}
		if v.FilePath == "" {
			v.FilePath = "/.well-known/acme-challenge/" + v.Token
		}
		if !strings.HasPrefix(v.FilePath, "/") {
			return nil, malformed(op, fmt.Sprintf("field verification.file_path %q is not an absolute path", sanitize(v.FilePath, c.token)))
		}
	case MethodDNS:
		v.RecordName = dnsRecordName(firstNonEmpty(wv.Record, wv.Name, wv.Host), v.Domain)
	default:
		return nil, malformed(op, fmt.Sprintf("field verification.method is %q, want %q or %q", sanitize(v.Method, c.token), MethodHTTP, MethodDNS))
	}
	return v, nil
}

// dnsRecordName returns the fully qualified TXT name for domain: the name
// the API gave (completed with the domain when it is relative, e.g. just
// "_acme-challenge"), or ACME's "_acme-challenge.<domain>" when none was given.
func dnsRecordName(given, domain string) string {
	base := strings.TrimSuffix(strings.TrimPrefix(domain, "*."), ".")
	given = strings.TrimSuffix(strings.TrimSpace(given), ".")
	switch {
	case given == "":
		return "_acme-challenge." + base
	case !strings.Contains(given, "."):
		return given + "." + base
	default:
		return given
	}
}

// ConfirmVerification asks the API to check a verification. A check the
// provider has not decided yet is reported as ErrPending: ask again later,
// after the error's RetryAfter when the server gave one.
func (c *Client) ConfirmVerification(ctx context.Context, req ConfirmRequest) (*Confirmation, error) {
	var w confirmWire
	body := confirmBody{Token: c.token, Domain: req.Domain, Method: firstNonEmpty(req.Method, MethodHTTP), OrderID: req.OrderID}
	env, err := c.do(ctx, OpConfirm, http.MethodPut, body, &w)
	if err != nil {
		return nil, err
	}
	return &Confirmation{Domain: firstNonEmpty(w.Domain, req.Domain), OrderID: int64(w.OrderID), Message: sanitize(env.serverMessage(), c.token)}, nil
}

// Finalize creates a certificate for domains, which must all be verified.
// csrPEM, when not nil, is sent as "csr" (undocumented: the service may sign
// it or ignore it). It is not retried once the request has reached the
// server, since a repeat would create a second certificate.
func (c *Client) Finalize(ctx context.Context, domains []string, csrPEM []byte) (*Certificate, error) {
	var w finalizeWire
	body := finalizeBody{Token: c.token, Action: "finalize", Domains: domains, CSR: string(csrPEM)}
	if _, err := c.do(ctx, OpFinalize, http.MethodPost, body, &w); err != nil {
		return nil, err
	}
	return certificateFrom(&w)
}

// certificateFrom checks that a decoded finalize answer holds PEM where it
// must; what the certificate says is for the caller to check. Its errors
// name the field, never quote it: "key" is a private key.
func certificateFrom(w *finalizeWire) (*Certificate, error) {
	for _, f := range []struct {
		name, value, pemType, what string
		required                   bool
	}{
		{"crt", w.Crt, "CERTIFICATE", "certificate", true},
		{"ca", w.CA, "CERTIFICATE", "certificate", false},
		{"key", w.Key, "PRIVATE KEY", "private key", false},
		{"csr", w.CSR, "CERTIFICATE REQUEST", "certificate request", false},
	} {
		if f.value == "" {
			if f.required {
				return nil, malformed(OpFinalize, "field "+f.name+" is missing")
			}
			continue
		}
		if !strings.Contains(f.value, "-----BEGIN ") || !strings.Contains(f.value, f.pemType+"-----") {
			return nil, malformed(OpFinalize, "field "+f.name+" is not a PEM "+f.what)
		}
	}
	cert := &Certificate{
		CertificatePEM: []byte(w.Crt),
		CAPEM:          []byte(w.CA),
		PrivateKeyPEM:  []byte(w.Key),
		CSRPEM:         []byte(w.CSR),
		ID:             int64(w.ID),
	}
	if w.Details != nil {
		cert.Details = *w.Details
	}
	return cert, nil
}

// Delete deletes a certificate (RecordCertificate) or cancels a pending
// order (RecordOrder) by id.
func (c *Client) Delete(ctx context.Context, recordType string, id int64) error {
	_, err := c.do(ctx, OpDelete, http.MethodDelete, deleteBody{Token: c.token, Type: recordType, ID: id}, nil)
	return err
}

func malformed(op Op, msg string) error {
	return &Error{Op: op, Kind: ErrMalformed, Message: msg, Attempts: 1}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
