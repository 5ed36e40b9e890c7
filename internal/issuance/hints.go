package issuance

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sslci/caddy-sslci/api"
)

// Hints: where the cause of a failed issuance is known, its error ends with
// one sentence saying what to do. Issue applies Hint to the error it
// returns; the README's Troubleshooting section quotes these sentences
// (TestTroubleshootingQuotesRealErrors keeps it honest).

// Hint sentences. In hintHTTPCheck, %[1]s is the name and %[2]s says
// where port 80 is forwarded, if not to port 80.
const (
	hintHTTPCheck = "SSLCI must reach http://%[1]s/.well-known/acme-challenge/ on port 80 and find this Caddy there%[2]s: " +
		"point %[1]s at this machine and let port 80 through, set alt_http_port to the port that port 80 is forwarded to, " +
		"or verify by DNS (a `dns` provider); `caddy sslci check %[1]s` shows what SSLCI sees"
	hintUnauthorized = "SSLCI refused the API token: check `token` in the config " +
		"(with {env.SSLCI_TOKEN}, that SSLCI_TOKEN is set, in Caddy's environment, to your account's current token)"
	hintForbidden = "the record belongs to another SSLCI account than this token's: " +
		"was the token changed while an order or a verification made with the old one was in use?"
	hintRedirect = "set `endpoint` to the API's own URL (default " + api.DefaultEndpoint + "): " +
		"SSLCI's API does not redirect, and a redirect is never followed, as it would carry the token away"
	hintRefused = "nothing was stored: Caddy keeps the certificate it has and tries again later; " +
		"if this repeats, SSLCI is returning unusable certificates: tell SSLCI, with the order ids from the log"
	hintRequireCSRKey = "remove require_csr_key to accept certificates for a key SSLCI generated " +
		"(the issuer then stores that key in place of Caddy's)"
)

// hinted is an error with a sentence appended; errors.Is and As see
// through it.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string {
	return strings.TrimSuffix(h.err.Error(), ".") + ". " + capitalized(h.hint) + "."
}
func (h *hinted) Unwrap() error { return h.err }

func capitalized(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

// verifyError is the failure of one name's verification after SSLCI
// created its order: the name and method let hint explain a failed check.
type verifyError struct {
	name, method string
	err          error
}

func (e *verifyError) Error() string { return e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

// refusedError is a certificate SSLCI returned that Issue refused.
type refusedError struct {
	requireCSRKey bool
	err           error
}

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// Hint returns err with the sentence for its cause, or err as it is.
// httpPort says where SSLCI's HTTP check arrives (nil: port 80).
func Hint(err error, httpPort func() int) error {
	if h := hintFor(err, httpPort); h != "" {
		return &hinted{err: err, hint: h}
	}
	return err
}

func hintFor(err error, httpPort func() int) string {
	var apiErr *api.Error
	var ve *verifyError
	var re *refusedError
	switch {
	case errors.Is(err, api.ErrUnauthorized):
		return hintUnauthorized
	case errors.Is(err, api.ErrForbidden):
		return hintForbidden
	case errors.Is(err, api.ErrRedirect):
		return hintRedirect
	case errors.As(err, &re) && re.requireCSRKey:
		return hintRequireCSRKey
	case re != nil:
		return hintRefused
	case errors.As(err, &ve) && ve.method == api.MethodHTTP && errors.As(err, &apiErr) && apiErr.Op == api.OpConfirm &&
		(errors.Is(err, api.ErrInvalidRequest) || errors.Is(err, api.ErrRejected)):
		forwarded := ""
		if port := 80; httpPort != nil && httpPort() != 80 {
			port = httpPort()
			forwarded = fmt.Sprintf(" (port 80 forwarded to its port %d)", port)
		}
		return fmt.Sprintf(hintHTTPCheck, ve.name, forwarded)
	}
	return ""
}
