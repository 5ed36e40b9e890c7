package sslcitest

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// retryAfterSeconds is d in whole seconds, rounded up and at least 1: a
// client must not come back early.
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int((d+time.Second-1)/time.Second)))
}

// writeFault answers with a fault of the kinds applied before processing.
func (s *Server) writeFault(w *recorder, q queuedFault) {
	retryAfter := retryAfterSeconds(s.faults.rates.RetryAfter)
	switch q.kind {
	case FaultServerError:
		writeJSON(w, http.StatusInternalServerError, errorBody("internal server error (simulated)"))
	case FaultMalformedJSON:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"status":true,"certificates":[{"crt_id":1,"doma`))
	case FaultHTML:
		writeHTML(w, http.StatusBadGateway)
	case FaultRedirect:
		w.Header().Set("Location", q.location)
		writeHTML(w, q.status)
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

// writeHTML answers with nginx's page for code, as a proxy in front of the
// API would.
func writeHTML(w http.ResponseWriter, code int) {
	title := fmt.Sprintf("%d %s", code, http.StatusText(code))
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(code)
	fmt.Fprintf(w, "<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n", title, title)
}

// writeAfter replaces the 200 answer body of a processed request with a
// fault of the kinds applied after processing: nothing at all, or the
// status line, the headers (with the full Content-Length) and the first
// half of body.
func writeAfter(w *recorder, kind Fault, body []byte) {
	if kind == FaultLostAfter {
		w.abort(nil, 0)
		return
	}
	h := w.Header().Clone()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Connection", "close")
	var raw bytes.Buffer
	raw.WriteString("HTTP/1.1 200 OK\r\n")
	h.Write(&raw)
	raw.WriteString("\r\n")
	raw.Write(body[:len(body)/2])
	w.abort(raw.Bytes(), http.StatusOK)
}
