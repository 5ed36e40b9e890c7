package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"time"
)

// do sends one operation and decodes a successful JSON answer into out.
//
// Retries follow from the HTTP method. GET, PUT and DELETE are idempotent:
// they are retried on transport errors, timeouts, truncated or undecodable
// bodies, 429 and 5xx. A POST (verification request, finalize) creates an
// order or a certificate each time it is processed, so it is retried only
// when the server cannot have processed it: the request was never
// completely written, or the server declined it with 429 or 503. A POST that
// may have been processed fails instead, and the caller decides (certmagic
// retries the whole issuance later). A redirect is never followed nor retried.
func (c *Client) do(ctx context.Context, op Op, method string, body, out any) (envelope, error) {
	c.start()
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return envelope{}, &Error{Op: op, Kind: ErrInvalidRequest, Err: err}
		}
	}
	idempotent := method != http.MethodPost
	policy := c.Retry
	if policy.MaxAttempts < 1 {
		policy.MaxAttempts = 1
	}
	var last *Error
	for attempt := 1; ; attempt++ {
		if err := c.acquire(ctx, op); err != nil {
			if last != nil {
				return envelope{}, last // what the server said matters more
			}
			return envelope{}, err
		}
		env, written, err := c.attempt(ctx, op, method, payload, out)
		c.release()
		if err == nil {
			return env, nil
		}
		if last != nil && ctx.Err() != nil {
			// The context ended this attempt: as above, what the server
			// said before matters more than the deadline.
			last.Attempts = attempt
			return env, last
		}
		err.Attempts, last = attempt, err
		if !retryable(err, idempotent, written) || attempt >= policy.MaxAttempts || ctx.Err() != nil {
			return env, err
		}
		wait := policy.backoff(attempt)
		if err.RetryAfter > 0 {
			if err.RetryAfter > policy.MaxRetryAfter {
				return env, err
			}
			wait = err.RetryAfter
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return env, err
		}
		if c.Logger != nil {
			c.Logger.LogAttrs(ctx, slog.LevelWarn, "sslci API request failed; retrying",
				slog.String("op", string(op)), slog.Int("attempt", attempt), slog.Duration("wait", wait), slog.String("error", err.Error()))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return env, err
		case <-t.C:
		}
	}
}

func retryable(err *Error, idempotent, written bool) bool {
	if UntrustedEndpoint(err) {
		return false // the same certificate is presented again
	}
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

// acquire takes a slot (MaxConcurrent) and waits out a slow-down the server
// asked for, within ctx. On success the caller must release.
func (c *Client) acquire(ctx context.Context, op Op) *Error {
	if c.slots != nil {
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			return &Error{Op: op, Kind: transportKind(ctx, ctx.Err()), Message: "not sent: waiting for a free slot (MaxConcurrent)", Err: ctx.Err()}
		}
	}
	for {
		c.mu.Lock()
		wait := time.Until(c.notBefore)
		c.mu.Unlock()
		if wait <= 0 {
			return nil
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			c.release()
			return &Error{Op: op, Kind: ErrRateLimited, RetryAfter: wait, Message: "not sent: SSLCI asked this client to slow down"}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			c.release()
			return &Error{Op: op, Kind: transportKind(ctx, ctx.Err()), Message: "not sent: waiting for SSLCI's Retry-After", Err: ctx.Err()}
		case <-t.C:
		}
	}
}

func (c *Client) release() {
	if c.slots != nil {
		<-c.slots
	}
}

// slowDown holds every request of the client until d from now: the server
// said so with a 429 or 503, and it speaks for all of them.
func (c *Client) slowDown(ctx context.Context, op Op, retryAfter time.Duration) {
	d := min(retryAfter, c.Retry.MaxRetryAfter)
	if d <= 0 {
		return
	}
	until := time.Now().Add(d)
	c.mu.Lock()
	later := until.After(c.notBefore)
	if later {
		c.notBefore = until
	}
	c.mu.Unlock()
	if later && c.Logger != nil {
		c.Logger.LogAttrs(ctx, slog.LevelWarn, "SSLCI asked to slow down; holding every request of this client",
			slog.String("op", string(op)), slog.Duration("wait", d))
	}
}

// attempt makes one HTTP request and reports it to Observe. written
// reports whether the request was completely sent (and so may have been
// processed).
func (c *Client) attempt(ctx context.Context, op Op, method string, payload []byte, out any) (envelope, bool, *Error) {
	start := time.Now()
	env, status, written, err := c.send(ctx, op, method, payload, out)
	if err != nil && (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) {
		c.slowDown(ctx, op, err.RetryAfter)
	}
	if c.Observe != nil {
		var e error
		if err != nil {
			e = err
		}
		c.Observe(op, status, time.Since(start), e)
	}
	return env, written, err
}

// refuseRedirect makes http.Client return a redirect as it is: following one
// would send the token to wherever it points (307 and 308 re-send the body).
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func (c *Client) send(ctx context.Context, op Op, method string, payload []byte, out any) (env envelope, status int, written bool, _ *Error) {
	var retryAfter time.Duration
	fail := func(kind error, msg string, cause error) (envelope, int, bool, *Error) {
		return env, status, written, &Error{Op: op, StatusCode: status, Kind: kind, Message: msg, RetryAfter: retryAfter, Err: cause}
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
		return fail(ErrInvalidRequest, "", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.UserAgent)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := *c.HTTPClient
	hc.CheckRedirect = refuseRedirect
	resp, err := hc.Do(req)
	if err != nil {
		return fail(transportKind(ctx, err), "", err)
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
	if status >= 300 && status < 400 {
		return fail(kindForStatus(status), redirectTarget(req, resp.Header.Get("Location"), c.token), nil)
	}

	limit := c.MaxResponseBytes
	if limit <= 0 {
		limit = 1 << 20
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fail(transportKind(ctx, err), "reading the response body", err)
	}
	if int64(len(raw)) > limit {
		return fail(ErrTooLarge, fmt.Sprintf("more than %d bytes", limit), nil)
	}
	env, derr := c.decode(op, status, resp.Header.Get("Content-Type"), raw, out)
	if derr != nil {
		derr.RetryAfter = retryAfter
	}
	return env, status, written, derr
}

// redirectTarget names where a redirect points: its scheme and host only,
// as the path or query could hold anything.
func redirectTarget(req *http.Request, location, secret string) string {
	const advice = " (not followed: check the endpoint URL)"
	if location == "" {
		return "no Location" + advice
	}
	u, err := req.URL.Parse(location)
	if err != nil || u.Host == "" {
		return "to an invalid Location" + advice
	}
	return "to " + sanitize(u.Scheme+"://"+u.Host, secret) + advice
}

func transportKind(ctx context.Context, err error) error {
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) ||
		(errors.As(err, &netErr) && netErr.Timeout()) {
		return ErrTimeout
	}
	return ErrTransport
}

// maxRetryAfterSecs keeps an absurd Retry-After from overflowing a Duration.
const maxRetryAfterSecs = 1 << 30

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or invalid.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs >= 0 {
		return time.Duration(min(secs, maxRetryAfterSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// UntrustedEndpoint reports whether err is the endpoint's TLS certificate
// failing verification: no retry makes it verify.
func UntrustedEndpoint(err error) bool {
	var cve *tls.CertificateVerificationError
	return errors.As(err, &cve)
}
