package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// decode interprets one complete response: an error for a failure status,
// a non-JSON body, "status": false or a pending confirmation; otherwise the
// body decoded into out.
func (c *Client) decode(op Op, status int, contentType string, raw []byte, out any) (envelope, *Error) {
	// A good answer is decoded once, its envelope with it (the wire types
	// embed it); anything else, the envelope first, as below.
	if w, ok := out.(enveloped); ok && json.Unmarshal(raw, out) == nil {
		if env := *w.env(); kindOf(op, status, true, &env) == nil {
			return env, nil
		}
	}
	var env envelope
	isJSON := json.Unmarshal(raw, &env) == nil
	kind := kindOf(op, status, isJSON, &env)
	if kind != nil {
		var msg string
		switch {
		case isJSON:
			msg = sanitize(env.serverMessage(), c.token)
		case kind != ErrMalformed:
			msg = excerpt(contentType, raw, c.token)
		case op == OpFinalize:
			// A finalize answer cut short starts with the private key.
			msg = fmt.Sprintf("body is not JSON (%d bytes, not shown: it may hold a private key)", len(raw))
		default:
			msg = "body is not JSON: " + excerpt(contentType, raw, c.token)
		}
		return env, &Error{Op: op, StatusCode: status, Kind: kind, Message: msg}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return env, &Error{Op: op, StatusCode: status, Kind: ErrMalformed, Message: sanitize(fieldError(err), c.token)}
		}
	}
	return env, nil
}

// kindOf decides, once, what kind of failure an answer is; nil for success.
func kindOf(op Op, status int, isJSON bool, env *envelope) error {
	// Undocumented: a check still running at the provider. Assume it is said
	// in words ("pending", "processing", ...) or with 202.
	saysPending := op == OpConfirm && isJSON && looksPending(env.serverMessage())
	ok := status >= 200 && status < 300
	switch {
	case !ok && saysPending && status == http.StatusBadRequest:
		return ErrPending
	case !ok:
		return kindForStatus(status)
	case !isJSON:
		return ErrMalformed
	case op == OpConfirm && (status == http.StatusAccepted || looksPending(env.Status.Word)):
		return ErrPending
	case env.Status.Set && !env.Status.OK && saysPending:
		return ErrPending
	case env.Status.Set && !env.Status.OK && !looksPending(env.Status.Word):
		return ErrRejected
	}
	return nil
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

// fieldError describes a decoding error, naming the field where known.
func fieldError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("field %s: cannot decode %s", te.Field, te.Value)
	}
	return err.Error()
}
