package issuance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// The confirm polling: SSLCI's check usually takes a moment, so the first
// retry comes soon and the following ones less and less often.
const (
	confirmFirstWait = 100 * time.Millisecond
	confirmMaxWait   = 3 * time.Second
)

// confirmWait is the wait before asking again after the attempt-th
// "pending" answer (1 for the first): SSLCI's Retry-After when it gave one,
// else confirmFirstWait growing by half each time, up to confirmMaxWait.
func confirmWait(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return retryAfter
	}
	wait := confirmFirstWait
	for i := 1; i < attempt && wait < confirmMaxWait; i++ {
		wait += wait / 2
	}
	return min(wait, confirmMaxWait)
}

// confirm asks SSLCI to check the verification, and asks again while SSLCI
// says the check is still in progress, until deadline (verification_timeout
// after the first attempt of the confirm step).
func (r *run) confirm(ctx context.Context, v *api.Verification, deadline time.Time) error {
	iss := r.iss
	timeout := iss.verificationTimeout()
	parent := ctx
	ctx, cancel := context.WithDeadline(parent, deadline)
	defer cancel()
	for attempt := 1; ; attempt++ {
		_, err := iss.Client.ConfirmVerification(ctx, api.ConfirmRequest{Domain: v.Domain, OrderID: v.OrderID, Method: v.Method})
		if !errors.Is(err, api.ErrPending) {
			return err
		}
		var retryAfter time.Duration
		if ae, ok := errors.AsType[*api.Error](err); ok {
			retryAfter = ae.RetryAfter
		}
		wait := confirmWait(attempt, retryAfter)
		if time.Until(deadline) < wait {
			// Asking later than the deadline could not succeed: say so now.
			return fmt.Errorf("still in progress, and the next check (in %s) would come after verification_timeout (%s): %w",
				wait, timeout, err)
		}
		r.logger.Debug("verification still in progress at SSLCI", zap.String("identifier", v.Domain), zap.Duration("retry_in", wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if parent.Err() != nil {
				return fmt.Errorf("stopped while still in progress: %w", context.Cause(parent))
			}
			return fmt.Errorf("still in progress after %s (verification_timeout): %w", timeout, err)
		case <-t.C:
		}
	}
}
