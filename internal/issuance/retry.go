package issuance

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// The one retry policy of an issuance. Which layer retries what:
//
//   - The API client retries nothing for the issuer (the root package
//     makes its client with Retry.MaxAttempts 1): every HTTP request is
//     one attempt of a step, counted here. A 429 or 503 with Retry-After
//     still holds every request of the client (that is not a retry).
//   - A step (one verification request, one confirm, one finalize, one
//     cancel, a reconciliation with SSLCI's list) is tried up to
//     RetryPolicy.Attempts times in all while Transient says its error may
//     pass, with jittered doubling back-off from MinBackoff to MaxBackoff,
//     or SSLCI's longer Retry-After (up to maxRetryAfter). A POST whose answer may be
//     lost is reconciled (one GET list) before it is sent again: a step
//     of its own, so that a list or a deletion that fails does not spend
//     the POST's attempts (at 20% faults on every request it had used up
//     a finalize's 8 in some runs); if that step fails for good, so does
//     the POST's.
//   - Confirm asks again while SSLCI says "pending" (that is not a
//     failure), until verification_timeout, which bounds every attempt of
//     the confirm step together.
//   - certmagic retries a failed Issue later, from a minute on: the last
//     resort, never waited for inside an Issue.
//
// So a step that keeps failing costs at most Attempts requests of its own
// operation (and, for a request or a finalize, at most Attempts lists to
// reconcile between them, all of its reconciliations together);
// TestRetryBudget counts it.
type RetryPolicy struct {
	Attempts               int // attempts of one step in all, the first included
	MinBackoff, MaxBackoff time.Duration
}

// DefaultRetry is the policy of every issuer: 8 attempts over about 11 s.
var DefaultRetry = RetryPolicy{Attempts: 8, MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}

// maxRetryAfter: a longer Retry-After from SSLCI is cut to this.
const maxRetryAfter = 2 * time.Minute

// retry runs step until it succeeds, fails for good (Transient says), or
// the policy's attempts are spent.
func (r *run) retry(ctx context.Context, step func() error) error {
	return r.retryWithin(ctx, nil, step)
}

// policy is the issuer's retry policy, or DefaultRetry.
func (r *run) policy() RetryPolicy {
	if r.iss.Retry.Attempts == 0 {
		return DefaultRetry
	}
	return r.iss.Retry
}

// retryWithin is retry with the attempts counted down in budget (nil:
// the policy's), which steps may share.
func (r *run) retryWithin(ctx context.Context, budget *int, step func() error) error {
	policy := r.policy()
	if budget == nil {
		n := policy.Attempts
		budget = &n
	}
	wait := policy.MinBackoff
	for attempt := 1; ; attempt++ {
		err := step()
		*budget--
		if s, ok := errors.AsType[spent](err); ok {
			return s.err
		}
		if err == nil || !Transient(err) || *budget <= 0 || ctx.Err() != nil {
			return err
		}
		d := wait/2 + rand.N(wait/2+1)
		if ae, ok := errors.AsType[*api.Error](err); ok && ae.RetryAfter > d {
			d = min(ae.RetryAfter, maxRetryAfter)
		}
		r.logger.Warn("SSLCI request failed; retrying within this issuance", zap.Int("attempt", attempt), zap.Duration("retry_in", d), zap.Error(err))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, policy.MaxBackoff)
	}
}

// spent is the error of a step inside a step (reconcileLost) that used up
// its own attempts: the step around it ends with that error at once.
type spent struct{ err error }

func (s spent) Error() string { return s.err.Error() }
func (s spent) Unwrap() error { return s.err }

// Transient reports whether a failed request may succeed if sent again:
// SSLCI or the way to it failed (5xx, an HTML page, a dropped connection,
// a cut-off or malformed body, a timeout, 429). Not: 4xx (a wrong token,
// a record of another account, a refused check), a redirect, a
// certificate our checks refused, an endpoint whose TLS certificate does
// not verify (it presents the same one again), a cancelled context.
func Transient(err error) bool {
	ae, ok := errors.AsType[*api.Error](err)
	if !ok || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || api.UntrustedEndpoint(err) {
		return false
	}
	switch ae.Kind {
	case api.ErrServer, api.ErrTransport, api.ErrTimeout, api.ErrMalformed, api.ErrRateLimited:
		return true
	}
	return false
}

// declined reports whether a failed POST was certainly not processed:
// SSLCI declined it (429, 503), refused it (3xx, 4xx, "status": false), or
// the client never sent it. Anything else may have created an order or a
// certificate whose answer was lost.
func declined(err error) bool {
	ae, ok := errors.AsType[*api.Error](err)
	if !ok {
		return false
	}
	switch code := ae.StatusCode; {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		return true
	case code >= 300 && code < 500:
		return true
	case code == 0 && ae.Kind == api.ErrRateLimited: // not sent: the client is slowed down
		return true
	}
	return errors.Is(err, api.ErrRejected)
}
