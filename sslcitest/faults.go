package sslcitest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Fault is a way for a response to go wrong.
type Fault string

// The faults. Those up to FaultTruncated are applied before the request is
// processed, so nothing changes on the server; the others are applied while
// processing and only to the operation named.
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

	// FaultPending: confirm answers 200 {"status":"pending",...} without
	// checking; the order stays pending.
	FaultPending Fault = "pending"
	// Finalize only: the certificate returned is wrong in one way.
	FaultWrongNames Fault = "wrong_names" // valid, but for "wrong.invalid"
	FaultBrokenPEM  Fault = "broken_pem"  // crt is a PEM block of garbage
	FaultWrongKey   Fault = "wrong_key"   // for a key neither returned nor in the CSR
	FaultExpired    Fault = "expired"     // NotAfter in the past
)

// FaultRates are the probabilities (0..1, summing to at most 1) that a
// request gets each fault, drawn with one roll of the seeded dice per
// request.
type FaultRates struct {
	ServerError, MalformedJSON, HTML, Drop, RateLimit, Unavailable float64
	// Latency is added before every request.
	Latency time.Duration
	// RetryAfter is sent with 429 and 503, in whole seconds rounded up
	// (at least 1); default 1s.
	RetryAfter time.Duration
}

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
	if r.Latency < 0 {
		return errors.New("sslcitest: negative fault latency")
	}
	return nil
}

// appliesTo reports whether f makes sense for op.
func (f Fault) appliesTo(op Op) bool {
	switch f {
	case FaultServerError, FaultMalformedJSON, FaultHTML, FaultDrop, FaultRateLimit, FaultUnavailable, FaultTruncated:
		return true
	case FaultPending:
		return op == OpConfirm
	case FaultWrongNames, FaultBrokenPEM, FaultWrongKey, FaultExpired:
		return op == OpFinalize
	}
	return false
}

// beforeProcessing reports whether f replaces the whole response.
func (f Fault) beforeProcessing() bool {
	return f.appliesTo(OpList) // the kinds that apply to every operation
}

type queuedFault struct {
	op   Op
	kind Fault
	n    int
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
// finalize; and these two only for one that gets as far as checking or
// issuing (a finalize refused for an unverified domain leaves them queued).
//
// With n <= 0 it cancels instead: the queued faults for op (OpAny: every
// op) of kind (FaultNone: every kind) are dropped. It panics on an unknown
// kind, and on FaultNone with n > 0.
func (s *Server) InjectFault(op Op, kind Fault, n int) {
	// Every kind applies to confirm or to finalize.
	known := kind.appliesTo(OpConfirm) || kind.appliesTo(OpFinalize)
	f := s.faults
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case n <= 0 && (known || kind == FaultNone):
		f.queue = slices.DeleteFunc(f.queue, func(q queuedFault) bool {
			return (op == OpAny || q.op == op) && (kind == FaultNone || q.kind == kind)
		})
	case !known:
		panic(fmt.Sprintf("sslcitest: cannot inject fault %q", kind))
	default:
		f.queue = append(f.queue, queuedFault{op, kind, n})
	}
}

// pick takes the fault for a request at one stage: before processing, the
// first queued fault of those kinds that applies, else a roll of the dice;
// while processing, the first queued fault of the other kinds.
func (f *faultState) pick(op Op, before bool) Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.queue {
		q := &f.queue[i]
		if (q.op == OpAny || q.op == op) && q.kind.appliesTo(op) && q.kind.beforeProcessing() == before {
			kind := q.kind
			if q.n--; q.n == 0 {
				f.queue = append(f.queue[:i], f.queue[i+1:]...)
			}
			return kind
		}
	}
	var total float64
	for _, k := range f.rates.kinds() {
		total += k.rate
	}
	if !before || total == 0 {
		return FaultNone // the dice only ever give transport faults
	}
	roll := f.rng.Float64()
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

// writeFault answers with a fault of the kinds applied before processing.
func (s *Server) writeFault(w *recorder, kind Fault) {
	// Whole seconds, rounded up: a client must not come back early.
	retryAfter := strconv.Itoa(max(1, int((s.faults.rates.RetryAfter+time.Second-1)/time.Second)))
	switch kind {
	case FaultServerError:
		writeJSON(w, http.StatusInternalServerError, errorBody("internal server error (simulated)"))
	case FaultMalformedJSON:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"status":true,"certificates":[{"crt_id":1,"doma`))
	case FaultHTML:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"))
	case FaultRateLimit:
		w.Header().Set("Retry-After", retryAfter)
		writeJSON(w, http.StatusTooManyRequests, errorBody("too many requests (simulated)"))
	case FaultUnavailable:
		w.Header().Set("Retry-After", retryAfter)
		writeJSON(w, http.StatusServiceUnavailable, errorBody("service unavailable (simulated)"))
	case FaultDrop:
		w.abort(nil, 0)
	case FaultTruncated:
		w.abort([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 512\r\nConnection: close\r\n\r\n"+
			`{"status":true,"domain":"`), http.StatusOK)
	}
}
