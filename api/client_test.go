package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// fastRetries keeps the tests quick while exercising every retry path.
// The client's own default is what the README says: up to 4 attempts,
// doubling back-off from 0.5 s, Retry-After honoured up to 2 minutes.
func TestDefaultRetryPolicyAsDocumented(t *testing.T) {
	want := api.RetryPolicy{MaxAttempts: 4, MinBackoff: 500 * time.Millisecond, MaxBackoff: 10 * time.Second, MaxRetryAfter: 2 * time.Minute}
	if api.DefaultRetryPolicy != want {
		t.Errorf("DefaultRetryPolicy = %+v, want %+v (change the README with it)", api.DefaultRetryPolicy, want)
	}
}

var fastRetries = api.RetryPolicy{MaxAttempts: 4, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxRetryAfter: 5 * time.Second}

// challengeServer answers HTTP-01 requests on loopback with the key
// authorizations it was given, as Caddy would.
type challengeServer struct {
	mu    sync.Mutex
	paths map[string]string // host+path -> body
	addr  string
}

func startChallengeServer(t *testing.T) *challengeServer {
	t.Helper()
	cs := &challengeServer{paths: map[string]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cs.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		body, ok := cs.paths[r.Host+r.URL.Path]
		cs.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return cs
}

func (cs *challengeServer) serve(v *api.Verification) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.paths[v.Domain+v.FilePath] = v.Content
}

// newPair starts a simulator and a client for its first account.
func newPair(t *testing.T, opts sslcitest.Options) (*sslcitest.Server, *api.Client, *challengeServer) {
	t.Helper()
	cs := startChallengeServer(t)
	opts.HTTPChallengeAddr = cs.addr
	sim, err := sslcitest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	c, err := api.New(sim.URL(), sim.Token())
	if err != nil {
		t.Fatal(err)
	}
	c.HTTPClient = sim.HTTPClient()
	c.Retry = fastRetries
	return sim, c, cs
}

// verify does the documented per-domain steps: request, serve, confirm.
func verify(t *testing.T, c *api.Client, cs *challengeServer, domain string) *api.Verification {
	t.Helper()
	ctx := context.Background()
	v, err := c.RequestVerification(ctx, domain, api.MethodHTTP)
	if err != nil {
		t.Fatalf("RequestVerification(%s): %v", domain, err)
	}
	if v.Domain != domain || v.OrderID <= 0 || v.Token == "" || v.FilePath != "/.well-known/acme-challenge/"+v.Token ||
		v.URL != "http://"+domain+v.FilePath || !strings.HasPrefix(v.Content, v.Token+".") {
		t.Fatalf("verification = %+v", v)
	}
	cs.serve(v)
	conf, err := c.ConfirmVerification(ctx, api.ConfirmRequest{Domain: domain})
	if err != nil {
		t.Fatalf("ConfirmVerification(%s): %v", domain, err)
	}
	if conf.Domain != domain || conf.OrderID != v.OrderID {
		t.Errorf("confirmation = %+v, want order %d", conf, v.OrderID)
	}
	return v
}

func newCSR(t *testing.T, names ...string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}

// checkChain verifies crt+ca against the simulator's root for every name
// and returns the leaf.
func checkChain(t *testing.T, sim *sslcitest.Server, cert *api.Certificate, names []string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(cert.CertificatePEM)
	if block == nil {
		t.Fatal("crt is not PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	if !inter.AppendCertsFromPEM(cert.CAPEM) {
		t.Fatal("ca holds no certificate")
	}
	for _, name := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: sim.RootPool(), Intermediates: inter}); err != nil {
			t.Errorf("chain does not verify for %s: %v", name, err)
		}
	}
	got, want := slices.Clone(leaf.DNSNames), slices.Clone(names)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("SANs = %v, want exactly %v", got, want)
	}
	return leaf
}

// A multi-domain certificate the documented way: POST and PUT per domain,
// one finalize; the service generates the key. Then list and delete.
func TestSANCertificateDocumentedFlow(t *testing.T) {
	sim, c, cs := newPair(t, sslcitest.Options{})
	ctx := context.Background()
	names := []string{"a.example.test", "b.example.test", "c.example.test"}
	for _, n := range names {
		verify(t, c, cs, n)
	}
	csrPEM, csrKey := newCSR(t, names...)
	cert, err := c.Finalize(ctx, names, csrPEM)
	if err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	leaf := checkChain(t, sim, cert, names)
	key, err := parseKey(cert.PrivateKeyPEM)
	if err != nil {
		t.Fatalf("returned key: %v", err)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("the certificate is not for the returned key")
	}
	if csrKey.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("the simulator signed the CSR although SignCSR is off")
	}
	if cert.Details.Subject["CN"] != "a.example.test" || cert.Details.SAN != "DNS:a.example.test, DNS:b.example.test, DNS:c.example.test" {
		t.Errorf("details = %+v", cert.Details)
	}
	if _, err := time.Parse(time.DateTime, cert.Details.ValidTo); err != nil {
		t.Errorf("valid_to %q: %v", cert.Details.ValidTo, err)
	}

	list, err := c.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list.PendingOrders) != 0 || len(list.Certificates) != 1 || !slices.Equal(list.Certificates[0].Domains, names) {
		t.Fatalf("list = %+v", list)
	}
	if exp := list.Certificates[0].Expires; exp.Unix() != leaf.NotAfter.Unix() {
		t.Errorf("listed end_time %s, certificate NotAfter %s", exp, leaf.NotAfter)
	}
	if err := c.Delete(ctx, api.RecordCertificate, list.Certificates[0].ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if list, _ = c.List(ctx); len(list.Certificates) != 0 {
		t.Errorf("certificate still listed after delete: %+v", list)
	}
}

func parseKey(keyPEM []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("unexpected key type %T", k)
	}
	return ec, nil
}

// With the simulator signing client CSRs, the certificate's key is the CSR's.
func TestFinalizeHonoursCSR(t *testing.T) {
	sim, c, cs := newPair(t, sslcitest.Options{SignCSR: true})
	names := []string{"csr.example.test", "www.csr.example.test"}
	for _, n := range names {
		verify(t, c, cs, n)
	}
	csrPEM, key := newCSR(t, names...)
	cert, err := c.Finalize(context.Background(), names, csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := checkChain(t, sim, cert, names)
	if !key.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("the certificate is not for the CSR's key")
	}
	if len(cert.PrivateKeyPEM) != 0 {
		t.Error("a key was returned although the CSR was signed")
	}
}

// A verification older than 29 days no longer counts for finalize.
func TestVerificationExpires(t *testing.T) {
	sim, c, cs := newPair(t, sslcitest.Options{})
	verify(t, c, cs, "old.example.test")
	sim.Advance(29*24*time.Hour + time.Minute)
	_, err := c.Finalize(context.Background(), []string{"old.example.test"}, nil)
	var apiErr *api.Error
	if !errors.Is(err, api.ErrInvalidRequest) || !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.Message, "old.example.test") {
		t.Fatalf("Finalize after 29 days = %v, want a 400 naming the domain", err)
	}
	// Within the window it works.
	verify(t, c, cs, "old.example.test")
	if _, err := c.Finalize(context.Background(), []string{"old.example.test"}, nil); err != nil {
		t.Fatal(err)
	}
}

// Every documented error code maps to an error kind the caller can test
// for, with the operation, the status and the server's message.
func TestDocumentedErrors(t *testing.T) {
	sim, c, cs := newPair(t, sslcitest.Options{Tokens: []string{"token-of-alice-0123456789", "token-of-bob-0123456789"}})
	ctx := context.Background()
	bob, _ := api.New(sim.URL(), "token-of-bob-0123456789")
	bob.Retry = fastRetries
	wrong, _ := api.New(sim.URL(), "token-of-nobody-0123456789")

	v := verify(t, c, cs, "mine.example.test")
	_ = v
	order, err := c.RequestVerification(ctx, "pending.example.test", api.MethodHTTP)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		call   func() error
		kind   error
		status int
		op     api.Op
		msg    string // a part of the server's message
	}{
		{"401 wrong token", func() error { _, err := wrong.List(ctx); return err }, api.ErrUnauthorized, 401, "list", ""},
		{"400 two domains", func() error {
			_, err := c.RequestVerification(ctx, "a.example.test,b.example.test", api.MethodHTTP)
			return err
		}, api.ErrInvalidRequest, 400, api.OpRequest, "domain"},
		{"400 bad method", func() error { _, err := c.RequestVerification(ctx, "a.example.test", "ftp"); return err }, api.ErrInvalidRequest, 400, api.OpRequest, "method"},
		{"400 unverified finalize", func() error { _, err := c.Finalize(ctx, []string{"never.example.test"}, nil); return err }, api.ErrInvalidRequest, 400, "finalize", "never.example.test"},
		{"400 empty finalize", func() error { _, err := c.Finalize(ctx, nil, nil); return err }, api.ErrInvalidRequest, 400, "finalize", "domains"},
		{"403 not yours", func() error { return bob.Delete(ctx, api.RecordOrder, order.OrderID) }, api.ErrForbidden, 403, "delete", ""},
		{"500 server error", func() error {
			sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultServerError, 1)
			_, err := c.Finalize(ctx, []string{"mine.example.test"}, nil)
			return err
		}, api.ErrServer, 500, "finalize", "simulated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var apiErr *api.Error
			if !errors.Is(err, tc.kind) || !errors.As(err, &apiErr) {
				t.Fatalf("err = %v, want kind %v", err, tc.kind)
			}
			if apiErr.StatusCode != tc.status || apiErr.Op != tc.op || !strings.Contains(strings.ToLower(apiErr.Message), tc.msg) {
				t.Errorf("err = %+v, want status %d, op %q, message containing %q", apiErr, tc.status, tc.op, tc.msg)
			}
			for _, tok := range sim.Tokens() {
				if strings.Contains(err.Error(), tok) {
					t.Errorf("error contains a token: %v", err)
				}
			}
		})
	}
	// The order of alice is still there: bob's delete did nothing.
	if pending := sim.PendingOrders(sim.Token()); len(pending) != 1 || pending[0].ID != order.OrderID {
		t.Errorf("pending = %+v", pending)
	}
	if err := c.Delete(ctx, api.RecordOrder, order.OrderID); err != nil {
		t.Fatalf("cancelling own order: %v", err)
	}
	if pending := sim.PendingOrders(sim.Token()); len(pending) != 0 {
		t.Errorf("cancelled order still pending: %+v", pending)
	}
}

// A confirmation the provider has not decided is ErrPending; a failed check
// is a 400 whose message says what the provider got.
func TestConfirmPendingAndFailed(t *testing.T) {
	sim, c, _ := newPair(t, sslcitest.Options{})
	ctx := context.Background()
	v, err := c.RequestVerification(ctx, "slow.example.test", api.MethodHTTP)
	if err != nil {
		t.Fatal(err)
	}
	sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1)
	if _, err := c.ConfirmVerification(ctx, api.ConfirmRequest{Domain: v.Domain, OrderID: v.OrderID}); !errors.Is(err, api.ErrPending) {
		t.Fatalf("confirm = %v, want ErrPending", err)
	}
	// Nothing serves the file: the check fails and says what it got.
	_, err = c.ConfirmVerification(ctx, api.ConfirmRequest{Domain: v.Domain, OrderID: v.OrderID})
	if !errors.Is(err, api.ErrInvalidRequest) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("confirm = %v, want a 400 saying 404", err)
	}
}

// Each fault kind, and whether it is retried: the attempts are counted in
// the simulator's request log. POST is retried only when the server cannot
// have processed it.
func TestFaultsAndRetries(t *testing.T) {
	cases := []struct {
		name     string
		op       sslcitest.Op
		fault    sslcitest.Fault
		n        int
		call     func(*api.Client) error
		wantKind error // nil: success
		attempts int   // requests the simulator saw for op
	}{
		{"list retried after 500s", sslcitest.OpList, sslcitest.FaultServerError, 2, list, nil, 3},
		{"list retried after a dropped connection", sslcitest.OpList, sslcitest.FaultDrop, 1, list, nil, 2},
		{"list retried after malformed JSON", sslcitest.OpList, sslcitest.FaultMalformedJSON, 1, list, nil, 2},
		{"list retried after a truncated body", sslcitest.OpList, sslcitest.FaultTruncated, 1, list, nil, 2},
		{"list retried after an HTML error page", sslcitest.OpList, sslcitest.FaultHTML, 1, list, nil, 2},
		{"list gives up after MaxAttempts", sslcitest.OpList, sslcitest.FaultServerError, 10, list, api.ErrServer, 4},
		{"request retried after 429", sslcitest.OpRequest, sslcitest.FaultRateLimit, 1, request, nil, 2},
		{"request retried after 503", sslcitest.OpRequest, sslcitest.FaultUnavailable, 1, request, nil, 2},
		{"request not retried after 500", sslcitest.OpRequest, sslcitest.FaultServerError, 1, request, api.ErrServer, 1},
		{"request not retried after a drop", sslcitest.OpRequest, sslcitest.FaultDrop, 1, request, api.ErrTransport, 1},
		{"request malformed JSON", sslcitest.OpRequest, sslcitest.FaultMalformedJSON, 1, request, api.ErrMalformed, 1},
		{"request HTML error page", sslcitest.OpRequest, sslcitest.FaultHTML, 1, request, api.ErrServer, 1},
		{"confirm retried after an HTML error page", sslcitest.OpConfirm, sslcitest.FaultHTML, 1, confirm, api.ErrInvalidRequest, 2},
		{"delete retried after 500", sslcitest.OpDelete, sslcitest.FaultServerError, 1, deleteOrder, nil, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sim, c, _ := newPair(t, sslcitest.Options{Faults: sslcitest.FaultRates{RetryAfter: time.Second}})
			if tc.op == sslcitest.OpDelete {
				v, err := c.RequestVerification(context.Background(), "del.example.test", api.MethodHTTP)
				if err != nil {
					t.Fatal(err)
				}
				lastOrder = v.OrderID
			}
			sim.InjectFault(tc.op, tc.fault, tc.n)
			err := tc.call(c)
			if tc.wantKind == nil && err != nil {
				t.Fatalf("err = %v, want success after retries", err)
			}
			if tc.wantKind != nil && !errors.Is(err, tc.wantKind) {
				t.Fatalf("err = %v, want %v", err, tc.wantKind)
			}
			if got := sim.CountRequests(tc.op); got != tc.attempts {
				t.Errorf("simulator saw %d %s requests, want %d", got, tc.op, tc.attempts)
			}
			if tc.op == sslcitest.OpRequest && tc.wantKind != nil {
				if p := sim.PendingOrders(sim.Token()); len(p) > 1 {
					t.Errorf("a failed request left %d orders", len(p))
				}
			}
		})
	}
}

var lastOrder int64

func list(c *api.Client) error { _, err := c.List(context.Background()); return err }
func request(c *api.Client) error {
	_, err := c.RequestVerification(context.Background(), "r.example.test", api.MethodHTTP)
	return err
}
func confirm(c *api.Client) error {
	_, err := c.ConfirmVerification(context.Background(), api.ConfirmRequest{Domain: "none.example.test"})
	return err
}
func deleteOrder(c *api.Client) error {
	return c.Delete(context.Background(), api.RecordOrder, lastOrder)
}

// A Retry-After longer than the policy allows is not waited for, and a
// context deadline ends the waiting.
func TestRetryBounds(t *testing.T) {
	sim, c, _ := newPair(t, sslcitest.Options{Faults: sslcitest.FaultRates{RetryAfter: 30 * time.Second}})
	sim.InjectFault(sslcitest.OpList, sslcitest.FaultRateLimit, 1)
	c.Retry.MaxRetryAfter = time.Second
	start := time.Now()
	err := list(c)
	var apiErr *api.Error
	if !errors.Is(err, api.ErrRateLimited) || !errors.As(err, &apiErr) || apiErr.RetryAfter != 30*time.Second || !strings.Contains(err.Error(), "retry after 30s") {
		t.Fatalf("err = %v, want rate limited, saying the server's retry-after", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Error("waited for a Retry-After over MaxRetryAfter")
	}

	// A client the server has not slowed down.
	c, _ = api.New(sim.URL(), sim.Token())
	c.HTTPClient = sim.HTTPClient()
	sim.InjectFault(sslcitest.OpList, sslcitest.FaultServerError, 100)
	c.Retry = api.RetryPolicy{MaxAttempts: 100, MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.List(ctx); !errors.Is(err, api.ErrServer) {
		t.Fatalf("err = %v", err)
	}
	if n := sim.CountRequests(sslcitest.OpList); n >= 100 {
		t.Errorf("the deadline did not stop the retries (%d attempts)", n)
	}
}

// Answers the simulator does not give, from a loopback server that says
// exactly what each case needs.
func TestUndocumentedAnswers(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		ctype    string
		body     string
		delay    time.Duration
		kind     error
		contains string
	}{
		{"405", 405, "application/json", `{"status":false,"message":"Method Not Allowed"}`, 0, api.ErrMethodNotAllowed, "Method Not Allowed"},
		{"200 with status false", 200, "application/json", `{"status":false,"message":"quota exceeded"}`, 0, api.ErrRejected, "quota exceeded"},
		{"error field instead of message", 400, "application/json", `{"status":false,"error":"bad domain"}`, 0, api.ErrInvalidRequest, "bad domain"},
		{"PHP fatal error page", 500, "text/html", "<html><body><b>Fatal error</b>: Uncaught Exception in /var/www/api.php</body></html>", 0, api.ErrServer, "text/html, 84 bytes: Fatal error: Uncaught Exception in /var/www/api.php"},
		{"empty 502", 502, "", "", 0, api.ErrServer, "(empty body)"},
		{"not JSON on 200", 200, "text/plain", "OK", 0, api.ErrMalformed, "not JSON"},
		{"too large", 200, "application/json", `{"status":true,"pad":"` + strings.Repeat("x", 2<<20) + `"}`, 0, api.ErrTooLarge, "more than"},
		{"timeout", 200, "application/json", `{"status":true}`, 2 * time.Second, api.ErrTimeout, ""},
		{"missing order_id", 200, "application/json", `{"status":true,"verification":{"method":"http","token":"t","content":"t.x"}}`, 0, api.ErrMalformed, "order_id"},
		{"missing verification", 200, "application/json", `{"status":true,"order_id":3}`, 0, api.ErrMalformed, "field verification is missing"},
		{"order_id of the wrong type", 200, "application/json", `{"status":true,"order_id":{"id":3}}`, 0, api.ErrMalformed, "order_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := serveOnce(t, tc.status, tc.ctype, tc.body, tc.delay)
			c, err := api.New(url, "secret-token-0123456789")
			if err != nil {
				t.Fatal(err)
			}
			c.Retry.MaxAttempts = 1
			c.HTTPClient.Timeout = 500 * time.Millisecond
			_, err = c.RequestVerification(context.Background(), "x.example.test", api.MethodHTTP)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("err = %v, want %v", err, tc.kind)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("err = %q, want it to contain %q", err, tc.contains)
			}
			if len(err.Error()) > 600 {
				t.Errorf("error message is %d bytes long", len(err.Error()))
			}
		})
	}
}

func serveOnce(t *testing.T, status int, ctype, body string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if ctype != "" {
			w.Header().Set("Content-Type", ctype)
		}
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/api"
}

// The token never appears in a request URL, an error, or a log line, for
// every operation, failing or not.
func TestTokenNeverLeaks(t *testing.T) {
	sim, c, cs := newPair(t, sslcitest.Options{Faults: sslcitest.FaultRates{RetryAfter: time.Second}})
	token := sim.Token()
	var logs bytes.Buffer
	c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var urls []string
	var mu sync.Mutex
	base := c.HTTPClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.HTTPClient.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		urls = append(urls, r.URL.String())
		mu.Unlock()
		if got := r.Header.Get("Authorization"); got != "Bearer "+token {
			t.Errorf("Authorization header = %q", got)
		}
		return base.RoundTrip(r)
	})
	ctx := context.Background()
	var errs []error
	collect := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	verify(t, c, cs, "leak.example.test")
	_, err := c.Finalize(ctx, []string{"leak.example.test"}, nil)
	collect(err)
	for _, f := range []sslcitest.Fault{sslcitest.FaultServerError, sslcitest.FaultHTML, sslcitest.FaultMalformedJSON, sslcitest.FaultDrop, sslcitest.FaultRateLimit, sslcitest.FaultTruncated} {
		sim.InjectFault(sslcitest.OpAny, f, 10)
		collect(list(c))
		collect(request(c))
		collect(confirm(c))
		_, err := c.Finalize(ctx, []string{"leak.example.test"}, nil)
		collect(err)
		collect(c.Delete(ctx, api.RecordOrder, 1))
		sim.InjectFault(sslcitest.OpAny, sslcitest.FaultNone, 0)
	}
	_, err = c.RequestVerification(ctx, token, api.MethodHTTP) // a server that echoes the input
	collect(err)
	if len(errs) < 10 {
		t.Fatalf("only %d errors were produced", len(errs))
	}
	for _, err := range errs {
		if strings.Contains(err.Error(), token) {
			t.Errorf("error contains the token: %v", err)
		}
	}
	for _, u := range urls {
		if strings.Contains(u, token) || strings.Contains(u, "?") {
			t.Errorf("request URL %q carries a token or a query", u)
		}
	}
	if logs.Len() == 0 {
		t.Error("no retry was logged")
	}
	if strings.Contains(logs.String(), token) {
		t.Error("a log line contains the token")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Plain http is refused except to loopback, so a token never crosses a
// network in clear.
func TestCheckEndpoint(t *testing.T) {
	good := []string{"https://www.sslci.com/api", "https://staging.example/api", "http://127.0.0.1:8555/api", "http://[::1]:8555/api", "http://localhost/api"}
	bad := []string{"http://www.sslci.com/api", "http://10.0.0.1/api", "ftp://www.sslci.com/api", "https://user:pw@www.sslci.com/api", "https://www.sslci.com/api?token=x", "/api", "://"}
	for _, e := range good {
		if err := api.CheckEndpoint(e); err != nil {
			t.Errorf("CheckEndpoint(%q) = %v", e, err)
		}
	}
	for _, e := range bad {
		if err := api.CheckEndpoint(e); err == nil {
			t.Errorf("CheckEndpoint(%q) accepted", e)
		}
	}
	if _, err := api.New("", ""); err == nil || !strings.Contains(err.Error(), "token is empty") {
		t.Errorf("New with no token = %v", err)
	}
}

// A deadline that ends a retry while it waits for the server still reports
// what the server said before (a 500 here), as a deadline during the
// back-off does, not a bare timeout.
func TestDeadlineDuringRetryKeepsServerError(t *testing.T) {
	var n atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > 1 {
			<-r.Context().Done() // the retry: no answer before the deadline
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"status":false,"message":"database unavailable"}`)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := api.New("http://"+ln.Addr().String()+"/api", "tok-deadline")
	if err != nil {
		t.Fatal(err)
	}
	c.Retry = api.RetryPolicy{MaxAttempts: 5, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.List(ctx)
	var apiErr *api.Error
	if !errors.Is(err, api.ErrServer) || !errors.As(err, &apiErr) || apiErr.Attempts != 2 || !strings.Contains(err.Error(), "database unavailable") {
		t.Fatalf("err = %v, want the server's 500 after 2 attempts", err)
	}
}
