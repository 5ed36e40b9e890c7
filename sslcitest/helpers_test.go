package sslcitest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sslci/caddy-sslci/sslcitest"
)

func newServer(t *testing.T, opts sslcitest.Options) *sslcitest.Server {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	s, err := sslcitest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// reply is an API answer.
type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any // nil when raw is not a JSON object
}

func (r reply) str(key string) string { s, _ := r.body[key].(string); return s }

func (r reply) message() string { return r.str("message") }

// do sends a request with body JSON-encoded (unless nil) and the token as
// a Bearer header (unless empty).
func do(t *testing.T, s *sslcitest.Server, method, token string, body any) reply {
	t.Helper()
	r, err := tryDo(s, method, token, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryDo is do for goroutines other than the test's.
func tryDo(s *sslcitest.Server, method, token string, body any) (reply, error) {
	req, err := jsonRequest(s, method, token, body)
	if err != nil {
		return reply{}, err
	}
	return trySend(s.HTTPClient(), req)
}

// jsonRequest is a request to the API with body JSON-encoded (unless nil)
// and the token as a Bearer header (unless empty).
func jsonRequest(s *sslcitest.Server, method, token string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.URL(), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

func send(t *testing.T, c *http.Client, req *http.Request) reply {
	t.Helper()
	r, err := trySend(c, req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func trySend(c *http.Client, req *http.Request) (reply, error) {
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: reading body: %v", req.Method, req.URL.Path, err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	json.Unmarshal(raw, &r.body)
	return r, nil
}

// wantError checks an error answer: the code, "status": false and a message
// containing each of parts.
func wantError(t *testing.T, r reply, code int, parts ...string) {
	t.Helper()
	if r.status != code || r.body["status"] != false {
		t.Fatalf("got %d %s, want %d with status false", r.status, r.raw, code)
	}
	for _, p := range parts {
		if !strings.Contains(r.message(), p) {
			t.Errorf("message %q does not contain %q", r.message(), p)
		}
	}
}

func wantOK(t *testing.T, r reply) {
	t.Helper()
	if r.status != http.StatusOK || r.body["status"] != true {
		t.Fatalf("got %d %s, want 200 with status true", r.status, r.raw)
	}
}

// challengeServer is a loopback web server answering HTTP-01 challenges
// by Host and path, as a domain's port 80 would.
type challengeServer struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string]string // host + path -> body
}

func newChallengeServer(t *testing.T) *challengeServer {
	c := &challengeServer{files: make(map[string]string)}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		body, ok := c.files[r.Host+r.URL.Path]
		c.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, body)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *challengeServer) set(host, path, body string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.files[host+path] = body
}

// addr is the server's host:port, for Options.HTTPChallengeAddr.
func (c *challengeServer) addr() string { return c.Listener.Addr().String() }

// verification is the "verification" object of a POST answer.
func verification(t *testing.T, r reply) map[string]string {
	t.Helper()
	v, ok := r.body["verification"].(map[string]any)
	if !ok {
		t.Fatalf("no verification object in %s", r.raw)
	}
	out := make(map[string]string)
	for k, x := range v {
		out[k], _ = x.(string)
	}
	return out
}

func orderID(t *testing.T, r reply) int64 {
	t.Helper()
	id, ok := r.body["order_id"].(float64)
	if !ok {
		t.Fatalf("no order_id in %s", r.raw)
	}
	return int64(id)
}

// verifyHTTP runs the documented HTTP-01 verification of one domain.
func verifyHTTP(t *testing.T, s *sslcitest.Server, token, domain string, ch *challengeServer) {
	t.Helper()
	r := do(t, s, "POST", token, map[string]any{"domain": domain, "method": "http"})
	wantOK(t, r)
	v := verification(t, r)
	ch.set(domain, v["file_path"], v["content"]+"\n")
	r = do(t, s, "PUT", token, map[string]any{"domain": domain, "order_id": orderID(t, r)})
	wantOK(t, r)
}
