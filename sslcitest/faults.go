package sslcitest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Fault is a way for a response to go wrong.
type Fault string

// The faults, by when they strike.
//
// Before processing (any operation; nothing changes on the server):
// FaultServerError to FaultTruncated, and FaultRedirect.
//
// While processing (only the operation named, and only a request that gets
// as far as checking or issuing): FaultPending, and the certificate faults.
//
// After processing (any operation; only a 200 answer): FaultLostAfter and
// FaultCutAfter. The operation's effect stays (the order is created, the
// domain verified, the certificate made, the record deleted); its answer
// is lost. Clients must find out what happened, for example with a list.
//
// net/http's client silently resends a GET dropped on a reused connection,
// so a dropped list may show only as two requests in the log.
const (
	FaultNone          Fault = ""
	FaultServerError   Fault = "server_error"   // 500 with a JSON error body
	FaultMalformedJSON Fault = "malformed_json" // 200 with a cut-off JSON body
	FaultHTML          Fault = "html"           // 502 text/html page, as from a proxy
	FaultDrop          Fault = "drop"           // the connection closes without an answer
	FaultRateLimit     Fault = "rate_limit"     // 429 with Retry-After
	FaultUnavailable   Fault = "unavailable"    // 503 with Retry-After
	FaultTruncated     Fault = "truncated"      // Content-Length promises more than is sent
	// FaultRedirect: a 3xx with a Location the test chose; see InjectRedirect.
	FaultRedirect Fault = "redirect"

	// FaultPending: confirm answers 200 {"status":"pending",...} without
	// checking (with FaultRates.PendingRetryAfter, if set); the order stays
	// pending.
	FaultPending Fault = "pending"
	// Finalize only: the certificate returned is wrong in one way.
	FaultWrongNames Fault = "wrong_names" // valid, but for "wrong.invalid"
	FaultBrokenPEM  Fault = "broken_pem"  // crt is a PEM block of garbage
	FaultWrongKey   Fault = "wrong_key"   // for a key neither returned nor in the CSR
	FaultExpired    Fault = "expired"     // NotAfter in the past
	// FaultSelfSigned: a leaf for the right names and key that is its own
	// issuer, returned as its own "ca". With SignCSR and a client's CSR the
	// simulator lacks the private key: a throwaway key signs it instead.
	FaultSelfSigned Fault = "self_signed"
	// FaultUnknownRoot: right names and key, leaf and intermediate that
	// chain correctly, to a root made on the spot that nobody trusts.
	FaultUnknownRoot Fault = "unknown_root"

	FaultLostAfter Fault = "lost_after" // processed, then the connection closes without an answer
	FaultCutAfter  Fault = "cut_after"  // processed, then 200, headers and half the JSON, and the connection closes
)

// stage is when a fault strikes.
type stage int

const (
	stageBefore stage = iota
	stageDuring
	stageAfter
)

func (f Fault) stage() stage {
	switch f {
	case FaultPending, FaultWrongNames, FaultBrokenPEM, FaultWrongKey, FaultExpired, FaultSelfSigned, FaultUnknownRoot:
		return stageDuring
	case FaultLostAfter, FaultCutAfter:
		return stageAfter
	}
	return stageBefore
}

// appliesTo reports whether f makes sense for op.
func (f Fault) appliesTo(op Op) bool {
	switch f {
	case FaultServerError, FaultMalformedJSON, FaultHTML, FaultDrop, FaultRateLimit, FaultUnavailable, FaultTruncated,
		FaultRedirect, FaultLostAfter, FaultCutAfter:
		return true
	case FaultPending:
		return op == OpConfirm
	case FaultWrongNames, FaultBrokenPEM, FaultWrongKey, FaultExpired, FaultSelfSigned, FaultUnknownRoot:
		return op == OpFinalize
	}
	return false
}

// FaultRates are the probabilities (0..1, summing to at most 1) that a
// request gets each fault, drawn with one roll of the seeded dice per
// request, on arrival. A fault of a later stage drawn for a request that
// does not get that far (Pending for a list; LostAfter for an error
// answer) is not applied: the dice are per request, not per answer.
type FaultRates struct {
	ServerError, MalformedJSON, HTML, Drop, RateLimit, Unavailable float64
	// Pending: confirm answers "pending" without checking.
	Pending float64
	// LostAfter, CutAfter: the request is processed, then its answer is
	// lost or cut off. For every operation.
	LostAfter, CutAfter float64
	// Latency is added before every request.
	Latency time.Duration
	// RetryAfter is sent with 429 and 503, in whole seconds rounded up
	// (at least 1); default 1s.
	RetryAfter time.Duration
	// PendingRetryAfter, if positive, is sent as Retry-After (whole
	// seconds rounded up) with every "pending" confirm answer. The
	// documentation does not say the service sends one: default none.
	PendingRetryAfter time.Duration
}

// kinds lists the rates in the order of the roll; new kinds go at the end
// so that a seed repeats the runs it gave before them.
func (r FaultRates) kinds() []struct {
	rate float64
	kind Fault
} {
	return []struct {
		rate float64
		kind Fault
	}{
		{r.ServerError, FaultServerError},
		{r.MalformedJSON, FaultMalformedJSON},
		{r.HTML, FaultHTML},
		{r.Drop, FaultDrop},
		{r.RateLimit, FaultRateLimit},
		{r.Unavailable, FaultUnavailable},
		{r.Pending, FaultPending},
		{r.LostAfter, FaultLostAfter},
		{r.CutAfter, FaultCutAfter},
	}
}

func (r FaultRates) validate() error {
	sum := 0.0
	for _, k := range r.kinds() {
		if k.rate < 0 || k.rate > 1 {
			return fmt.Errorf("sslcitest: fault rate %s = %v is not within 0..1", k.kind, k.rate)
		}
		sum += k.rate
	}
	if sum > 1 {
		return fmt.Errorf("sslcitest: fault rates sum to %v, more than 1", sum)
	}
	if r.Latency < 0 || r.PendingRetryAfter < 0 {
		return errors.New("sslcitest: negative fault latency or Retry-After")
	}
	return nil
}

// queuedFault is n faults waiting for requests for op; status and location
// are those of a redirect.
type queuedFault struct {
	op       Op
	kind     Fault
	n        int
	status   int
	location string
}

type faultState struct {
	rates FaultRates

	mu    sync.Mutex
	rng   *rand.Rand
	queue []queuedFault
}

func newFaultState(rates FaultRates, seed int64) *faultState {
	return &faultState{rates: rates, rng: rand.New(rand.NewPCG(uint64(seed), 0x55c1))}
}

// InjectFault makes the next n requests for op (OpAny: any op) get the fault
// kind, ahead of the random rates. A queued fault waits for a request it
// applies to: FaultPending for a confirm, the certificate faults for a
// finalize, and these only for one that gets as far as checking or issuing
// (a finalize refused for an unverified domain leaves them queued);
// FaultLostAfter and FaultCutAfter for a request answered 200 (the next n
// successful finalizes, say). FaultRedirect is queued with InjectRedirect.
//
// With n <= 0 it cancels instead: the queued faults for op (OpAny: every
// op) of kind (FaultNone: every kind) are dropped. It panics on an unknown
// kind, and on FaultNone or FaultRedirect with n > 0.
func (s *Server) InjectFault(op Op, kind Fault, n int) {
	// Every kind applies to confirm or to finalize.
	known := kind.appliesTo(OpConfirm) || kind.appliesTo(OpFinalize)
	switch {
	case n <= 0 && (known || kind == FaultNone):
		s.faults.cancel(op, kind)
	case !known || kind == FaultRedirect:
		panic(fmt.Sprintf("sslcitest: cannot inject fault %q with InjectFault", kind))
	default:
		s.faults.add(queuedFault{op: op, kind: kind, n: n})
	}
}

// InjectRedirect makes the next n requests for op (OpAny: any op) answer
// status (301, 302, 303, 307 or 308) with "Location: location" and a short
// HTML page, before processing, as a moved API or a misconfigured proxy
// would. Nothing changes on the server. A client must not follow: its
// token would go wherever Location points. With n <= 0 it cancels the
// queued redirects for op. It panics on another status or an empty
// location.
func (s *Server) InjectRedirect(op Op, status int, location string, n int) {
	if n <= 0 {
		s.faults.cancel(op, FaultRedirect)
		return
	}
	switch {
	case !slices.Contains([]int{301, 302, 303, 307, 308}, status):
		panic(fmt.Sprintf("sslcitest: %d is not a redirect status", status))
	case location == "":
		panic("sslcitest: empty redirect location")
	}
	s.faults.add(queuedFault{op: op, kind: FaultRedirect, n: n, status: status, location: location})
}

func (f *faultState) add(q queuedFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, q)
}

func (f *faultState) cancel(op Op, kind Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = slices.DeleteFunc(f.queue, func(q queuedFault) bool {
		return (op == OpAny || q.op == op) && (kind == FaultNone || q.kind == kind)
	})
}

// take takes the first queued fault of stage st that applies to op.
func (f *faultState) take(op Op, st stage) queuedFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.queue {
		q := &f.queue[i]
		if (q.op == OpAny || q.op == op) && q.kind.appliesTo(op) && q.kind.stage() == st {
			taken := *q
			if q.n--; q.n == 0 {
				f.queue = append(f.queue[:i], f.queue[i+1:]...)
			}
			return taken
		}
	}
	return queuedFault{}
}

// roll is the dice's fault for a request; the dice are not rolled when
// every rate is zero.
func (f *faultState) roll() Fault {
	var total float64
	for _, k := range f.rates.kinds() {
		total += k.rate
	}
	if total == 0 {
		return FaultNone
	}
	f.mu.Lock()
	roll := f.rng.Float64()
	f.mu.Unlock()
	for _, k := range f.rates.kinds() {
		if roll < k.rate {
			return k.kind
		}
		roll -= k.rate
	}
	return FaultNone
}

// delay sleeps for the configured latency; false if ctx ended first.
func (f *faultState) delay(ctx context.Context) bool {
	if f.rates.Latency <= 0 {
		return true
	}
	t := time.NewTimer(f.rates.Latency)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
