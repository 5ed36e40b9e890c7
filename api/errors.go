package api

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kinds of failure. Every error returned by a Client matches exactly one of
// these with errors.Is, and is an *Error (errors.As) carrying the operation,
// the HTTP status and the server's message.
var (
	ErrInvalidRequest   = errors.New("invalid request")                // 400
	ErrUnauthorized     = errors.New("authentication failed")          // 401: wrong or missing token
	ErrForbidden        = errors.New("forbidden")                      // 403: the record belongs to another account
	ErrNotFound         = errors.New("not found")                      // 404: wrong endpoint path
	ErrMethodNotAllowed = errors.New("method not allowed")             // 405
	ErrRateLimited      = errors.New("rate limited")                   // 429, or not sent: the client is slowed down past the context's deadline
	ErrServer           = errors.New("server error")                   // 5xx
	ErrRedirect         = errors.New("redirect refused")               // 3xx: never followed, never retried
	ErrUnexpectedStatus = errors.New("unexpected HTTP status")         // any other status
	ErrRejected         = errors.New("request rejected")               // 200 whose body says "status": false
	ErrPending          = errors.New("verification still in progress") // confirmation not decided yet: ask again later
	ErrMalformed        = errors.New("malformed response")             // not JSON, truncated, or a required field missing
	ErrTooLarge         = errors.New("response too large")             // body over Client.MaxResponseBytes
	ErrTimeout          = errors.New("timed out")                      // the request or its context deadline expired
	ErrTransport        = errors.New("connection failed")              // could not reach the API, or the connection broke
)

// Error is the error every Client method returns. It never contains the
// API token nor a PEM block: server messages and body excerpts are scrubbed.
type Error struct {
	Op         Op            // the operation
	StatusCode int           // HTTP status, 0 when no response was received
	Kind       error         // one of the Err* values above
	Message    string        // the server's message, or a short sanitized excerpt of a non-JSON body
	RetryAfter time.Duration // the server's Retry-After (on 429, 503, a pending confirmation...); 0 when none
	Attempts   int           // how many HTTP requests were made, retries included
	Err        error         // the underlying cause, if any (a transport or decoding error)
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("API ")
	b.WriteString(string(e.Op))
	b.WriteString(": ")
	b.WriteString(e.Kind.Error())
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (server asked to retry after %s)", e.RetryAfter.Round(time.Second))
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

// Is reports whether target is the kind of e, so errors.Is(err, ErrUnauthorized) works.
func (e *Error) Is(target error) bool { return target == e.Kind }

// Unwrap returns the cause, so errors.Is(err, context.DeadlineExceeded) works too.
func (e *Error) Unwrap() error { return e.Err }

// kindForStatus maps an HTTP failure status to an error kind.
func kindForStatus(code int) error {
	switch {
	case code == 400:
		return ErrInvalidRequest
	case code == 401:
		return ErrUnauthorized
	case code == 403:
		return ErrForbidden
	case code == 404:
		return ErrNotFound
	case code == 405:
		return ErrMethodNotAllowed
	case code == 429:
		return ErrRateLimited
	case code >= 300 && code < 400:
		return ErrRedirect
	case code >= 500:
		return ErrServer
	default:
		return ErrUnexpectedStatus
	}
}
