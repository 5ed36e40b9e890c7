package api

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
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
	ErrRateLimited      = errors.New("rate limited")                   // 429
	ErrServer           = errors.New("server error")                   // 5xx
	ErrUnexpectedStatus = errors.New("unexpected HTTP status")         // any other status
	ErrRejected         = errors.New("request rejected")               // 200 whose body says "status": false
	ErrPending          = errors.New("verification still in progress") // confirmation not decided yet: ask again later
	ErrMalformed        = errors.New("malformed response")             // not JSON, truncated, or a required field missing
	ErrTooLarge         = errors.New("response too large")             // body over Client.MaxResponseBytes
	ErrTimeout          = errors.New("timed out")                      // the request or its context deadline expired
	ErrTransport        = errors.New("connection failed")              // could not reach the API, or the connection broke
)

// Error is the error every Client method returns. It never contains the
// API token: server messages and body excerpts are scrubbed of it.
type Error struct {
	Op         string // the operation: "list", "request verification", "confirm", "finalize", "delete"
	StatusCode int    // HTTP status, 0 when no response was received
	Kind       error  // one of the Err* values above
	Message    string // the server's message, or a short sanitized excerpt of a non-JSON body
	Attempts   int    // how many HTTP requests were made, retries included
	Err        error  // the underlying cause, if any (a transport or decoding error)
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("sslci ")
	b.WriteString(e.Op)
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
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

// Is reports whether target is the kind of e, so errors.Is(err, ErrUnauthorized) works.
func (e *Error) Is(target error) bool { return target == e.Kind }

// Unwrap returns the cause, so errors.Is(err, context.DeadlineExceeded) works too.
func (e *Error) Unwrap() error { return e.Err }

// kindForStatus maps an HTTP status to an error kind.
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
	case code >= 500:
		return ErrServer
	default:
		return ErrUnexpectedStatus
	}
}

// maxExcerpt bounds how much of a server's text reaches an error message.
const maxExcerpt = 200

// sanitize turns server text into a short single line fit for an error or a
// log: HTML tags are dropped, control characters and runs of space folded,
// the secret (if it appears, before or after that) replaced, and the result
// cut.
func sanitize(s, secret string) string {
	redact := func(s string) string {
		if secret == "" {
			return s
		}
		return strings.ReplaceAll(s, secret, "[REDACTED]")
	}
	s = redact(s)
	var b strings.Builder
	inTag, space := false, false
	for _, r := range s {
		switch {
		case r == '<':
			inTag = true
			continue
		case inTag:
			if r == '>' {
				inTag = false
				space = true
			}
			continue
		case unicode.IsSpace(r) || !unicode.IsPrint(r):
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	out := redact(b.String())
	if len(out) > maxExcerpt {
		cut := maxExcerpt
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + "…"
	}
	return out
}
