package sslcitest

import (
	"fmt"
	"slices"
	"time"
)

// Op is an API operation.
type Op string

// The operations. OpAny matches every operation where an Op selects.
const (
	OpAny      Op = ""
	OpList     Op = "list"     // GET
	OpRequest  Op = "request"  // POST, verification request
	OpConfirm  Op = "confirm"  // PUT
	OpFinalize Op = "finalize" // POST, action=finalize
	OpDelete   Op = "delete"   // DELETE
	OpUnknown  Op = "unknown"  // wrong path, method or action
)

// Request is one entry of the request log.
type Request struct {
	Op      Op
	Method  string
	Domains []string // domain or domains, as sent
	Status  int      // the status sent; 0 when the connection was dropped
	// Fault is the fault applied, if any. A finalize with a certificate
	// fault whose answer is then lost or cut shows the latter.
	Fault Fault
	Time  time.Time // the simulator's clock at arrival
}

// maxLog bounds the request log of a long-running simulator; the oldest
// half is dropped when it is full.
const maxLog = 100_000

func (s *Server) logRequest(e Request, path, message string, took time.Duration) {
	s.mu.Lock()
	if len(s.reqlog) >= maxLog {
		s.reqlog = slices.Delete(s.reqlog, 0, maxLog/2)
	}
	s.reqlog = append(s.reqlog, e)
	s.mu.Unlock()
	if s.opts.Logf != nil {
		// The path only: the query may hold a token.
		line := fmt.Sprintf("%s %s op=%s domains=%q -> %d", e.Method, path, e.Op, e.Domains, e.Status)
		if e.Fault != FaultNone {
			line += fmt.Sprintf(" fault=%s", e.Fault)
		}
		if message != "" {
			line += ": " + message // what the client sent is quoted in it already
		}
		s.opts.Logf("sslci-sim: %s (%s)", line, took.Round(time.Millisecond))
	}
}

// Requests is a copy of the request log, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.reqlog)
	for i := range out {
		out[i].Domains = slices.Clone(out[i].Domains)
	}
	return out
}

// ResetRequests empties the request log.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqlog = nil
}

// CountRequests counts the logged requests for op; OpAny counts all.
func (s *Server) CountRequests(op Op) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.reqlog {
		if op == OpAny || r.Op == op {
			n++
		}
	}
	return n
}
