package sslci_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// confirmGaps returns the times between the simulator's confirm requests.
func (e *testEnv) confirmGaps() []time.Duration {
	var gaps []time.Duration
	var last time.Time
	for _, r := range e.sim.Requests() {
		if r.Op != sslcitest.OpConfirm {
			continue
		}
		if !last.IsZero() {
			gaps = append(gaps, r.Time.Sub(last))
		}
		last = r.Time
	}
	return gaps
}

// While SSLCI answers "pending" without a Retry-After, the issuer asks
// again after 100ms, then 150ms, 225ms...: one confirm per pending answer
// plus the one that succeeds, none sooner than its wait. (The waits are
// lower bounds: each gap also holds a request's round trip.)
func TestConfirmPollsUntilDecided(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(nil)
	e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 3)
	csr, _ := sslcitest.NewCSR(t, "poll.test")
	if _, err := iss.Issue(context.Background(), csr); err != nil {
		t.Fatal(err)
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: 4, sslcitest.OpFinalize: 1})
	gaps := e.confirmGaps()
	for i, min := range []time.Duration{100 * time.Millisecond, 150 * time.Millisecond, 225 * time.Millisecond} {
		if gaps[i] < min {
			t.Errorf("confirm %d came %s after the previous one, want at least %s (all gaps: %v)", i+2, gaps[i], min, gaps)
		}
	}
}

// A "pending" answer with Retry-After sets the wait before the next
// confirm: the simulator's clock sees no confirm sooner than it asked.
func TestConfirmFollowsRetryAfter(t *testing.T) {
	const retryAfter = time.Second // the header carries whole seconds
	e := newEnv(t, sslcitest.Options{Faults: sslcitest.FaultRates{PendingRetryAfter: retryAfter}})
	iss := e.startIssuer(nil)
	e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 2)
	csr, _ := sslcitest.NewCSR(t, "later.test")
	if _, err := iss.Issue(context.Background(), csr); err != nil {
		t.Fatal(err)
	}
	e.wantCounts(map[sslcitest.Op]int{sslcitest.OpList: 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: 3, sslcitest.OpFinalize: 1})
	for i, gap := range e.confirmGaps() {
		if gap < retryAfter {
			t.Errorf("confirm %d came %s after a pending answer with Retry-After %s", i+2, gap, retryAfter)
		}
	}
}

// A Retry-After beyond verification_timeout ends the polling at once: one
// confirm, an error that says why, and the order cancelled.
func TestConfirmRetryAfterBeyondTimeout(t *testing.T) {
	e := newEnv(t, sslcitest.Options{Faults: sslcitest.FaultRates{PendingRetryAfter: 5 * time.Second}})
	iss := e.startIssuer(map[string]any{"verification_timeout": "2s"})
	e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1000)
	csr, _ := sslcitest.NewCSR(t, "toolate.test")
	_, err := iss.Issue(context.Background(), csr)
	if !errors.Is(err, api.ErrPending) || !strings.Contains(err.Error(), "verification_timeout") || !strings.Contains(err.Error(), "toolate.test") {
		t.Fatalf("Issue = %v, want a pending error naming the name and verification_timeout", err)
	}
	if n := e.sim.CountRequests(sslcitest.OpConfirm); n != 1 {
		t.Errorf("%d confirms, want 1: the next would come after verification_timeout", n)
	}
	e.checkNothingLeft(t)
}

// Without Retry-After the polling stops at verification_timeout: with 1s,
// the waits 100+150+225+337.5ms leave room for five confirms at most.
func TestConfirmBoundedByVerificationTimeout(t *testing.T) {
	e := newEnv(t, sslcitest.Options{})
	iss := e.startIssuer(map[string]any{"verification_timeout": "1s"})
	e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1000)
	csr, _ := sslcitest.NewCSR(t, "bounded.test")
	if _, err := iss.Issue(context.Background(), csr); !errors.Is(err, api.ErrPending) {
		t.Fatalf("Issue = %v, want a pending error", err)
	}
	if n := e.sim.CountRequests(sslcitest.OpConfirm); n < 1 || n > 5 {
		t.Errorf("%d confirms within a 1s verification_timeout, want 1 to 5", n)
	}
	e.checkNothingLeft(t)
}
