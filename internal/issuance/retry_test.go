package issuance

import (
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// The issuer's policy is what the README's "Retries" says: 8 attempts,
// from 100 ms doubling to 5 s, about 11 s of waits in all (each wait is
// jittered down to half of it).
func TestDefaultRetryAsDocumented(t *testing.T) {
	want := RetryPolicy{Attempts: 8, MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}
	if DefaultRetry != want {
		t.Fatalf("DefaultRetry = %+v, want %+v (change the README with it)", DefaultRetry, want)
	}
	var total time.Duration
	for i, wait := 1, DefaultRetry.MinBackoff; i < DefaultRetry.Attempts; i, wait = i+1, min(2*wait, DefaultRetry.MaxBackoff) {
		total += wait
	}
	if total < 10*time.Second || total > 12*time.Second {
		t.Errorf("the waits between 8 attempts add up to %s, not about 11 s", total)
	}
}

// The retry budget, counted exactly: a step that keeps failing costs
// DefaultRetry.Attempts requests of its operation and no more (the client
// retries nothing of its own), plus, for a POST whose answer may be lost,
// one reconciliation list before each new attempt. The list before the
// first verification request (the id floor) and the one on the way out
// (the failed call settles what its lost answers left) come once.
func TestRetryBudget(t *testing.T) {
	n := DefaultRetry.Attempts
	for _, tc := range []struct {
		op    sslcitest.Op
		fault sslcitest.Fault
		want  map[sslcitest.Op]int
	}{
		// A 500 may come after processing: reconciled before each resend.
		{sslcitest.OpRequest, sslcitest.FaultServerError, map[sslcitest.Op]int{
			sslcitest.OpList: 1 + (n - 1) + 1, sslcitest.OpRequest: n}},
		// A 429 certainly was not processed: sent again without a list.
		{sslcitest.OpRequest, sslcitest.FaultRateLimit, map[sslcitest.Op]int{
			sslcitest.OpList: 1, sslcitest.OpRequest: n}},
		// A confirm is a PUT: sent again as it is; the order is cancelled.
		{sslcitest.OpConfirm, sslcitest.FaultHTML, map[sslcitest.Op]int{
			sslcitest.OpList: 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: n, sslcitest.OpDelete: 1}},
		{sslcitest.OpFinalize, sslcitest.FaultDrop, map[sslcitest.Op]int{
			sslcitest.OpList: 1 + (n - 1) + 1, sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: n}},
	} {
		t.Run(string(tc.op)+" "+string(tc.fault), func(t *testing.T) {
			t.Parallel() // a 429's Retry-After holds the client a second each time
			e := newEnv(t, sslcitest.Options{SignCSR: true})
			e.sim.InjectFault(tc.op, tc.fault, 1000)
			_, err := e.issue("budget.test")
			if !Transient(err) {
				t.Fatalf("Issue: %v; want the step's transient failure", err)
			}
			if got := e.requests(); !maps.Equal(got, tc.want) {
				t.Errorf("requests %v, want %v", got, tc.want)
			}
			var ae *api.Error
			if errors.As(err, &ae) && ae.Attempts > 1 {
				t.Errorf("the API client retried on its own: %d attempts", ae.Attempts)
			}
		})
	}
}

// The reconciliation before a lost POST is sent again is a step of its
// own: lists that fail spend its attempts, not the POST's. A finalize whose
// answer is lost, then 7 failing lists (each failure had cost the finalize
// an attempt, 8 in all: the Issue failed), then the certificate.
func TestLostAnswerReconcileHasItsOwnAttempts(t *testing.T) {
	e := newEnv(t, sslcitest.Options{SignCSR: true})
	var once sync.Once
	e.iss.Client.Observe = func(op api.Op, status int, _ time.Duration, err error) {
		if op == api.OpFinalize && err != nil {
			once.Do(func() { e.sim.InjectFault(sslcitest.OpList, sslcitest.FaultServerError, DefaultRetry.Attempts-1) })
		}
	}
	e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultLostAfter, 1)
	if _, err := e.issue("lost.test"); err != nil {
		t.Fatalf("Issue: %v; want the certificate after the lists recovered", err)
	}
	got := e.requests()
	// The floor's list, 7 failing and 1 good before the second finalize.
	if got[sslcitest.OpFinalize] != 2 || got[sslcitest.OpList] != 1+DefaultRetry.Attempts || got[sslcitest.OpDelete] != 1 {
		t.Errorf("requests %v; want 2 finalizes, %d lists, and the lost answer's certificate deleted", got, 1+DefaultRetry.Attempts)
	}

	// Lists that keep failing end the finalize's step after its budget of
	// lists, with the lost finalize sent no more.
	e = newEnv(t, sslcitest.Options{SignCSR: true})
	once = sync.Once{}
	e.iss.Client.Observe = func(op api.Op, status int, _ time.Duration, err error) {
		if op == api.OpFinalize && err != nil {
			once.Do(func() { e.sim.InjectFault(sslcitest.OpList, sslcitest.FaultServerError, 1000) })
		}
	}
	e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultLostAfter, 1)
	_, err := e.issue("down.test")
	if !Transient(err) {
		t.Fatalf("Issue: %v; want the lists' transient failure", err)
	}
	got = e.requests()
	if got[sslcitest.OpFinalize] != 1 || got[sslcitest.OpList] != 1+DefaultRetry.Attempts+1 {
		t.Errorf("requests %v; want 1 finalize and %d lists (the floor's, the budget, one on the way out)", got, 1+DefaultRetry.Attempts+1)
	}
}
