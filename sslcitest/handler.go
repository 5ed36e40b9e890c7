package sslcitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxBody caps request bodies; the largest legitimate one (a finalize with
// a CSR and many domains) is a few KiB.
const maxBody = 1 << 20

// call is one authenticated API request on its way to an operation.
type call struct {
	ctx     context.Context
	account string // the token
	p       params
	op      Op
	faults  *faultState
	diced   Fault       // the dice's fault, if of a later stage than arrival
	header  http.Header // of the answer
	entry   *Request    // its log entry
}

// fault takes the fault for this point of processing, if any (FaultPending,
// a certificate fault): the first queued, else the dice's. It records it in
// the log.
func (c *call) fault() Fault {
	f := c.faults.take(c.op, stageDuring).kind
	if f == FaultNone && c.diced.stage() == stageDuring && c.diced.appliesTo(c.op) {
		f = c.diced
	}
	c.entry.Fault = f
	return f
}

// afterFault takes the fault for a processed request's 200 answer, if any
// (FaultLostAfter, FaultCutAfter): the first queued, else the dice's. It
// records it in the log, over a certificate fault of the same request.
func (c *call) afterFault() Fault {
	f := c.faults.take(c.op, stageAfter).kind
	if f == FaultNone && c.diced.stage() == stageAfter {
		f = c.diced
	}
	if f != FaultNone {
		c.entry.Fault = f
	}
	return f
}

// apiError is an error answered with {"status": false, "message": ...}.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// errorBody is the error shape. The documentation shows none; this is the
// one the client is told to expect first.
func errorBody(msg string) map[string]any {
	return map[string]any{"status": false, "message": msg}
}

// serveHTTP answers one API request: latency, path and method, fault,
// authentication, then the operation.
func (s *Server) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	entry := Request{Op: OpUnknown, Method: r.Method, Time: s.now()}
	start := time.Now()
	w := &recorder{ResponseWriter: rw, logf: func(status int, message string) {
		entry.Status = status
		s.logRequest(entry, r.URL.Path, message, time.Since(start))
	}}
	defer w.logOnce(0) // nothing was sent

	if !s.faults.delay(r.Context()) {
		return
	}
	op, p, perr := s.parse(w, r)
	entry.Op, entry.Domains = op, p.loggedDomains()
	q := s.faults.take(op, stageBefore)
	if q.kind == FaultNone {
		q.kind = s.faults.roll()
	}
	if q.kind != FaultNone && q.kind.stage() == stageBefore {
		entry.Fault = q.kind
		s.writeFault(w, q)
		return
	}
	if perr != nil {
		writeError(w, perr)
		return
	}
	account, err := s.authenticate(r, p)
	if err != nil {
		writeError(w, err)
		return
	}
	c := &call{ctx: r.Context(), account: account, p: p, op: op, faults: s.faults, diced: q.kind, header: w.Header(), entry: &entry}
	resp, err := s.operate(c)
	if err != nil {
		writeError(w, err)
		return
	}
	code, body := encodeJSON(http.StatusOK, resp)
	if code == http.StatusOK {
		if after := c.afterFault(); after != FaultNone {
			writeAfter(w, after, body)
			return
		}
	}
	writeBody(w, code, body)
}

func (s *Server) operate(c *call) (any, error) {
	switch c.op {
	case OpList:
		return s.list(c)
	case OpRequest:
		return s.requestVerification(c)
	case OpConfirm:
		return s.confirm(c)
	case OpFinalize:
		return s.finalize(c)
	case OpDelete:
		return s.delete(c)
	}
	return nil, fmt.Errorf("no operation %q", c.op)
}

// parse finds the operation and reads the JSON body. Its error is answered
// only after the fault dice (a proxy's fault comes first).
func (s *Server) parse(w http.ResponseWriter, r *http.Request) (Op, params, error) {
	// One path only, as documented; "/api/" and the like are not it.
	if r.URL.Path != "/api" {
		return OpUnknown, nil, &apiError{http.StatusNotFound, "not found: the API is at /api"}
	}
	op := map[string]Op{
		http.MethodGet:    OpList,
		http.MethodPost:   OpRequest,
		http.MethodPut:    OpConfirm,
		http.MethodDelete: OpDelete,
	}[r.Method]
	if op == "" {
		w.Header().Set("Allow", "GET, POST, PUT, DELETE")
		return OpUnknown, nil, &apiError{http.StatusMethodNotAllowed, "method " + r.Method + " not supported"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		// 413 is not among the documented codes; 400 is.
		return op, nil, badRequest("request body unreadable or larger than %d bytes", maxBody)
	}
	var p params
	// The documentation says JSON; the Content-Type is not checked (being
	// tolerant costs nothing) but the body must be a JSON object.
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &p); err != nil {
			var syntax *json.SyntaxError
			if !errors.As(err, &syntax) {
				return op, nil, badRequest("invalid JSON body: must be an object")
			}
			return op, nil, badRequest("invalid JSON body: %v", err)
		}
	}
	if op == OpRequest {
		action, _, err := p.str("action")
		switch {
		case err != nil:
			return OpUnknown, p, err
		case action == "finalize":
			op = OpFinalize
		case action != "":
			return OpUnknown, p, badRequest("invalid parameter action: %q (the only action is \"finalize\")", action)
		}
	}
	return op, p, nil
}

// authenticate returns the account token. Accepted: the JSON body's token,
// "Authorization: Bearer", or ?token= on GET (as documented). The query
// token is refused on other methods. Tokens given twice must agree.
func (s *Server) authenticate(r *http.Request, p params) (string, error) {
	unauthorized := func(msg string) error { return &apiError{http.StatusUnauthorized, msg} }
	var given []string
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", unauthorized("unsupported Authorization header (use Bearer)")
		}
		given = append(given, strings.TrimSpace(tok))
	}
	tok, _, err := p.str("token")
	if err != nil {
		return "", unauthorized(err.Error())
	}
	if tok != "" {
		given = append(given, tok)
	}
	if q := r.URL.Query().Get("token"); q != "" {
		if r.Method != http.MethodGet {
			return "", unauthorized("a token in the query string is accepted only for GET")
		}
		given = append(given, q)
	}
	if len(given) == 0 {
		return "", unauthorized("missing token")
	}
	for _, g := range given[1:] {
		if g != given[0] {
			return "", unauthorized("the tokens given in the request differ")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.store.isAccount(given[0]) {
		return "", unauthorized("invalid token")
	}
	return given[0], nil
}

func writeError(w *recorder, err error) {
	var e *apiError
	if !errors.As(err, &e) {
		e = &apiError{http.StatusInternalServerError, "internal error: " + err.Error()}
	}
	w.message = e.msg
	writeJSON(w, e.code, errorBody(e.msg))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	code, body := encodeJSON(code, v)
	writeBody(w, code, body)
}

// encodeJSON is v as the body of an answer with code; a 500 if v cannot
// be encoded.
func encodeJSON(code int, v any) (int, []byte) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return http.StatusInternalServerError, []byte(`{"status":false,"message":"internal error: encoding the response"}`)
	}
	return code, buf.Bytes()
}

func writeBody(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	w.Write(body)
}

// recorder logs the request once, when its status is known and before the
// answer leaves: a client that has its answer finds it in the log.
type recorder struct {
	http.ResponseWriter
	message string // of an error answer
	logf    func(status int, message string)
	logged  bool
}

func (w *recorder) logOnce(status int) {
	if !w.logged {
		w.logged = true
		w.logf(status, w.message)
	}
}

func (w *recorder) WriteHeader(code int) {
	w.logOnce(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	w.logOnce(http.StatusOK)
	return w.ResponseWriter.Write(b)
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// abort writes raw bytes (if any) straight to the connection and closes it;
// status is what the log records. Without a connection to hijack (HTTP/2,
// httptest.ResponseRecorder) it aborts the handler, which resets the stream.
func (w *recorder) abort(raw []byte, status int) {
	conn, _, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer conn.Close()
	w.logOnce(status)
	conn.Write(raw)
}
