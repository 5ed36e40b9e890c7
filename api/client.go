// Package api is a client for the SSLCI REST API: list certificates and
// orders, request and confirm a domain verification, finalize a certificate
// and delete records. It has no dependency on Caddy and can be used on its own.
//
// The token is sent in the Authorization header (and, for POST, PUT and
// DELETE, in the JSON body as the API documents), never in a URL; it never
// appears in an error.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Version is this client's version, sent in the User-Agent.
const Version = "0.1.0"

// DefaultEndpoint is SSLCI's production API.
const DefaultEndpoint = "https://www.sslci.com/api"

// Client talks to one SSLCI endpoint with one account token. Its exported
// fields may be changed before first use; it is then safe for concurrent use.
type Client struct {
	// HTTPClient makes the requests; its Timeout bounds each attempt.
	HTTPClient *http.Client
	// UserAgent is sent with every request.
	UserAgent string
	// Retry is the retry policy.
	Retry RetryPolicy
	// MaxResponseBytes caps a response body; a larger one is ErrTooLarge.
	MaxResponseBytes int64
	// Logger receives one line per retry; nil logs nothing. Lines never
	// contain the token.
	Logger *slog.Logger

	endpoint string
	token    string
}

// RetryPolicy bounds retries. Which requests are retried at all depends on
// the operation: see Client.do.
type RetryPolicy struct {
	MaxAttempts   int           // attempts in all, the first included; 1 disables retries
	MinBackoff    time.Duration // the wait before the first retry (before jitter)
	MaxBackoff    time.Duration // the cap of the doubling wait
	MaxRetryAfter time.Duration // a longer Retry-After is not waited for: the error is returned
}

// DefaultRetryPolicy: four attempts over about four seconds, and server
// Retry-After hints of up to two minutes honoured.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:   4,
	MinBackoff:    500 * time.Millisecond,
	MaxBackoff:    10 * time.Second,
	MaxRetryAfter: 2 * time.Minute,
}

// New returns a client for endpoint (DefaultEndpoint when empty) with token.
func New(endpoint, token string) (*Client, error) {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if err := CheckEndpoint(endpoint); err != nil {
		return nil, err
	}
	if token == "" {
		return nil, errors.New("sslci: API token is empty")
	}
	return &Client{
		HTTPClient:       &http.Client{Timeout: 60 * time.Second},
		UserAgent:        "caddy-sslci/" + Version + " (+https://github.com/sslci/caddy-sslci)",
		Retry:            DefaultRetryPolicy,
		MaxResponseBytes: 1 << 20,
		endpoint:         endpoint,
		token:            token,
	}, nil
}

// CheckEndpoint reports whether endpoint is usable: an absolute https URL,
// or http to a loopback host only, so a token never crosses a network in
// clear. It may carry no credentials and no query.
func CheckEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return fmt.Errorf("sslci: endpoint %q: %w", endpoint, err)
	}
	if u.Host == "" {
		return fmt.Errorf("sslci: endpoint %q: not an absolute URL", endpoint)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("sslci: endpoint %q: must not contain credentials, a query or a fragment", u.Redacted())
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("sslci: endpoint %q: plain http is allowed only for loopback hosts (the token would travel in clear); use https", endpoint)
	default:
		return fmt.Errorf("sslci: endpoint %q: scheme must be https", endpoint)
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Endpoint returns the API URL the client uses.
func (c *Client) Endpoint() string { return c.endpoint }

// List returns the account's certificates and pending orders.
func (c *Client) List(ctx context.Context) (*List, error) {
	var w listWire
	if _, err := c.do(ctx, "list", http.MethodGet, nil, true, &w); err != nil {
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
	const op = "request verification"
	body := map[string]any{"token": c.token, "domain": domain, "method": method}
	var w verificationWire
	if _, err := c.do(ctx, op, http.MethodPost, body, false, &w); err != nil {
		return nil, err
	}
	return c.verificationFrom(&w, domain, method)
}

// verificationFrom checks a decoded verification answer and completes what
// the documentation leaves open.
func (c *Client) verificationFrom(w *verificationWire, domain, method string) (*Verification, error) {
	const op = "request verification"
	if w.OrderID <= 0 {
		return nil, c.malformed(op, "field order_id is missing or not a positive integer")
	}
	if w.Verification == nil {
		return nil, c.malformed(op, "field verification is missing")
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
		return nil, c.malformed(op, "field verification.content is missing")
	}
	switch v.Method {
	case MethodHTTP:
		if v.Token == "" && v.FilePath == "" {
			return nil, c.malformed(op, "fields verification.token and verification.file_path are both missing")
		}
		if v.FilePath == "" {
			v.FilePath = "/.well-known/acme-challenge/" + v.Token
		}
		if !strings.HasPrefix(v.FilePath, "/") {
			return nil, c.malformed(op, fmt.Sprintf("field verification.file_path %q is not an absolute path", sanitize(v.FilePath, c.token)))
		}
	case MethodDNS:
		v.RecordName = dnsRecordName(firstNonEmpty(wv.Record, wv.Name, wv.Host), v.Domain)
	default:
		return nil, c.malformed(op, fmt.Sprintf("field verification.method is %q, want %q or %q", sanitize(v.Method, c.token), MethodHTTP, MethodDNS))
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
// provider has not decided yet is reported as ErrPending: ask again later.
func (c *Client) ConfirmVerification(ctx context.Context, req ConfirmRequest) (*Confirmation, error) {
	const op = "confirm"
	body := map[string]any{"token": c.token, "domain": req.Domain, "method": firstNonEmpty(req.Method, MethodHTTP)}
	if req.OrderID != 0 {
		body["order_id"] = req.OrderID
	}
	var w confirmWire
	env, err := c.do(ctx, op, http.MethodPut, body, true, &w)
	if err != nil {
		// Undocumented: a check still running at the provider. Assume it is
		// said in words ("pending", "processing", ...), whatever the status.
		var apiErr *Error
		if errors.As(err, &apiErr) && (apiErr.Kind == ErrRejected || apiErr.Kind == ErrInvalidRequest) && looksPending(apiErr.Message) {
			apiErr.Kind = ErrPending
		}
		return nil, err
	}
	if env.statusCode == http.StatusAccepted || looksPending(env.Status.Word) {
		return nil, &Error{Op: op, StatusCode: env.statusCode, Kind: ErrPending, Message: sanitize(env.serverMessage(), c.token), Attempts: env.attempts}
	}
	return &Confirmation{Domain: firstNonEmpty(w.Domain, req.Domain), OrderID: int64(w.OrderID), Message: sanitize(env.serverMessage(), c.token)}, nil
}

// looksPending recognizes a check still running at the provider: a status
// word such as "pending", or a message such as "verification in progress".
// It is strict on purpose: "no pending verification" is a plain error.
func looksPending(s string) bool {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "pending", "processing", "in_progress", "in progress", "checking":
		return true
	}
	for _, w := range []string{"in progress", "still pending", "is pending", "still processing", "is processing", "try again later"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// Finalize creates a certificate for domains, which must all be verified.
// csrPEM, when not nil, is sent as "csr" (undocumented: the service may sign
// it or ignore it). It is not retried once the request has reached the
// server, since a repeat would create a second certificate.
func (c *Client) Finalize(ctx context.Context, domains []string, csrPEM []byte) (*Certificate, error) {
	const op = "finalize"
	body := map[string]any{"token": c.token, "action": "finalize", "domains": domains}
	if len(csrPEM) > 0 {
		body["csr"] = string(csrPEM)
	}
	var w finalizeWire
	if _, err := c.do(ctx, op, http.MethodPost, body, false, &w); err != nil {
		return nil, err
	}
	return c.certificateFrom(&w)
}

// certificateFrom checks that a decoded finalize answer holds PEM where it
// must; what the certificate says is for the caller to check.
func (c *Client) certificateFrom(w *finalizeWire) (*Certificate, error) {
	const op = "finalize"
	for _, f := range []struct {
		name, value, pemType string
		required             bool
	}{
		{"crt", w.Crt, "CERTIFICATE", true},
		{"ca", w.CA, "CERTIFICATE", false},
		{"key", w.Key, "PRIVATE KEY", false},
		{"csr", w.CSR, "CERTIFICATE REQUEST", false},
	} {
		if f.value == "" {
			if f.required {
				return nil, c.malformed(op, "field "+f.name+" is missing")
			}
			continue
		}
		if !strings.Contains(f.value, "-----BEGIN ") || !strings.Contains(f.value, f.pemType+"-----") {
			return nil, c.malformed(op, "field "+f.name+" is not a PEM "+f.pemType)
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
	body := map[string]any{"token": c.token, "type": recordType, "id": id}
	_, err := c.do(ctx, "delete", http.MethodDelete, body, true, nil)
	return err
}

func (c *Client) malformed(op, msg string) error {
	return &Error{Op: op, Kind: ErrMalformed, Message: msg, Attempts: 1}
}

// response is what do learned beyond the decoded body.
type response struct {
	envelope
	statusCode int
	attempts   int
}

// do sends one operation and decodes a successful JSON answer into out.
//
// Retries: idempotent operations (GET list, PUT confirm, DELETE) are retried
// on transport errors, timeouts, truncated or undecodable bodies, 429 and
// 5xx. POST (verification request, finalize) creates an order or a
// certificate each time it is processed, so it is retried only when the
// server cannot have processed it: the request was never completely written,
// or the server declined it with 429 or 503. A POST that may have been
// processed fails instead, and the caller decides (certmagic retries the
// whole issuance later).
func (c *Client) do(ctx context.Context, op, method string, body any, idempotent bool, out any) (response, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return response{}, &Error{Op: op, Kind: ErrInvalidRequest, Err: err}
		}
	}
	policy := c.Retry
	if policy.MaxAttempts < 1 {
		policy.MaxAttempts = 1
	}
	for attempt := 1; ; attempt++ {
		resp, written, retryAfter, err := c.attempt(ctx, op, method, payload, out)
		resp.attempts = attempt
		if err == nil {
			return resp, nil
		}
		err.Attempts = attempt
		retryable := retryableError(err, idempotent, written)
		if !retryable || attempt >= policy.MaxAttempts || ctx.Err() != nil {
			return resp, err
		}
		wait := policy.backoff(attempt)
		if retryAfter > 0 {
			if retryAfter > policy.MaxRetryAfter {
				err.Message = strings.TrimSpace(err.Message + fmt.Sprintf(" (server asked to retry after %s)", retryAfter))
				return resp, err
			}
			wait = retryAfter
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return resp, err
		}
		if c.Logger != nil {
			c.Logger.LogAttrs(ctx, slog.LevelWarn, "sslci API request failed; retrying",
				slog.String("op", op), slog.Int("attempt", attempt), slog.Duration("wait", wait), slog.String("error", err.Error()))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return resp, err
		case <-t.C:
		}
	}
}

func retryableError(err *Error, idempotent, written bool) bool {
	switch err.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return true // the server declined to process the request
	}
	if !idempotent {
		return !written && err.Kind == ErrTransport
	}
	switch err.Kind {
	case ErrTransport, ErrTimeout, ErrServer, ErrRateLimited:
		return !errors.Is(err.Err, context.Canceled)
	case ErrMalformed:
		return err.StatusCode >= 200 && err.StatusCode < 300
	}
	return false
}

// backoff returns the wait before retry number attempt: doubling from
// MinBackoff, capped at MaxBackoff, with half of it jittered so that many
// clients failing together do not retry together.
func (p RetryPolicy) backoff(attempt int) time.Duration {
	d := p.MinBackoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	if p.MaxBackoff > 0 && d > p.MaxBackoff {
		d = p.MaxBackoff
	}
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// attempt makes one HTTP request. written reports whether the request was
// completely sent (and so may have been processed); retryAfter is the
// server's Retry-After, if any.
func (c *Client) attempt(ctx context.Context, op, method string, payload []byte, out any) (resp response, written bool, retryAfter time.Duration, _ *Error) {
	fail := func(kind error, status int, msg string, cause error) (response, bool, time.Duration, *Error) {
		return resp, written, retryAfter, &Error{Op: op, StatusCode: status, Kind: kind, Message: msg, Err: cause}
	}
	var bodyReader io.Reader
	if payload != nil {
		bodyReader = bytes.NewReader(payload)
	}
	trace := &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
		written = info.Err == nil
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, c.endpoint, bodyReader)
	if err != nil {
		return fail(ErrInvalidRequest, 0, "", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.UserAgent)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	httpResp, err := c.HTTPClient.Do(req)
	if err != nil {
		return fail(transportKind(ctx, err), 0, "", err)
	}
	defer httpResp.Body.Close()
	resp.statusCode = httpResp.StatusCode
	retryAfter = parseRetryAfter(httpResp.Header.Get("Retry-After"))

	limit := c.MaxResponseBytes
	if limit <= 0 {
		limit = 1 << 20
	}
	raw, err := io.ReadAll(io.LimitReader(httpResp.Body, limit+1))
	if err != nil {
		return fail(transportKind(ctx, err), resp.statusCode, "reading the response body", err)
	}
	if int64(len(raw)) > limit {
		return fail(ErrTooLarge, resp.statusCode, fmt.Sprintf("more than %d bytes", limit), nil)
	}
	resp, decodeErr := c.decode(op, resp.statusCode, httpResp.Header.Get("Content-Type"), raw, out)
	return resp, written, retryAfter, decodeErr
}

// decode interprets one complete response: an error for a failure status,
// a non-JSON body or "status": false; otherwise the body decoded into out.
func (c *Client) decode(op string, status int, contentType string, raw []byte, out any) (response, *Error) {
	resp := response{statusCode: status}
	fail := func(kind error, msg string, cause error) (response, *Error) {
		return resp, &Error{Op: op, StatusCode: status, Kind: kind, Message: msg, Err: cause}
	}
	isJSON := json.Unmarshal(raw, &resp.envelope) == nil
	ok := status >= 200 && status < 300
	switch {
	case !ok && isJSON:
		return fail(kindForStatus(status), sanitize(resp.serverMessage(), c.token), nil)
	case !ok:
		return fail(kindForStatus(status), excerpt(contentType, raw, c.token), nil)
	case !isJSON:
		return fail(ErrMalformed, "body is not JSON: "+excerpt(contentType, raw, c.token), nil)
	case resp.Status.Set && !resp.Status.OK && !looksPending(resp.Status.Word):
		return fail(ErrRejected, sanitize(resp.serverMessage(), c.token), nil)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fail(ErrMalformed, sanitize(fieldError(err), c.token), nil)
		}
	}
	return resp, nil
}

// fieldError describes a decoding error, naming the field where known.
func fieldError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("field %s: cannot decode %s", te.Field, te.Value)
	}
	return err.Error()
}

func transportKind(ctx context.Context, err error) error {
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) ||
		(errors.As(err, &netErr) && netErr.Timeout()) {
		return ErrTimeout
	}
	return ErrTransport
}

// excerpt describes a body that is not the JSON we expect: its type and the
// start of its text, sanitized.
func excerpt(contentType string, body []byte, secret string) string {
	text := sanitize(string(body), secret)
	if text == "" {
		text = "(empty body)"
	}
	if ct, _, _ := strings.Cut(contentType, ";"); ct != "" {
		return ct + ": " + text
	}
	return text
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or invalid.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
