package sslci

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/sslci/caddy-sslci/api"
)

// confirm asks SSLCI to check the verification, and asks again with
// back-off while SSLCI says the check is still in progress.
func (r *issuance) confirm(ctx context.Context, v *api.Verification) error {
	iss := r.iss
	timeout := time.Duration(iss.VerificationTimeout)
	if timeout == 0 {
		timeout = defaultVerificationTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := 500 * time.Millisecond
	for {
		_, err := iss.client.ConfirmVerification(ctx, api.ConfirmRequest{Domain: v.Domain, OrderID: v.OrderID, Method: v.Method})
		if !errors.Is(err, api.ErrPending) {
			return err
		}
		r.logger.Debug("verification still in progress at SSLCI", zap.String("identifier", v.Domain), zap.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return fmt.Errorf("still in progress after %s (verification_timeout): %w", timeout, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 15*time.Second)
	}
}
