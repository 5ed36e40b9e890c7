package issuance

import (
	"errors"

	"github.com/sslci/caddy-sslci/internal/ledger"
)

// The steps an Issue fails at, as Metrics.Failed gets them, once per
// failed Issue.
const (
	// StepRequest: the verification requests, and what comes before them
	// (the names, settling earlier records, the account's first list).
	StepRequest = "request"
	// StepConfirm: putting a challenge in place, and SSLCI's check.
	StepConfirm = "confirm"
	// StepFinalize: the finalize request.
	StepFinalize = "finalize"
	// StepCheck: the certificate SSLCI returned was refused by our checks
	// (certcheck.go, require_csr_key).
	StepCheck = "check"
	// StepStore: a write to storage failed: a ledger record, SSLCI's key;
	// and, counted by the root package, certmagic's storing of the result.
	StepStore = "store"
)

// stepError is an error of the flow marked with the step it failed at.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// atStep marks err (nil: nil) as a failure of step.
func atStep(step string, err error) error {
	if err == nil {
		return nil
	}
	return &stepError{step: step, err: err}
}

// failedStep is the step err failed at: StepStore for any write to
// storage that failed (whatever step did it), else the step it is marked
// with.
func failedStep(err error) string {
	if _, ok := errors.AsType[*ledger.WriteError](err); ok {
		return StepStore
	}
	if se, ok := errors.AsType[*stepError](err); ok {
		return se.step
	}
	return StepRequest
}
