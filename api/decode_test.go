package api

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

const testSecret = "secret-token-0123456789"

// Where the documentation is silent, decoding is lenient: these answers are
// all accepted and read the same.
func TestLenientDecoding(t *testing.T) {
	c := &Client{token: testSecret}
	for _, body := range []string{
		`{"status":true,"domain":"a.test","order_id":42,"verification":{"method":"http","token":"tok","content":"tok.th","file_path":"/.well-known/acme-challenge/tok","url":"http://a.test/.well-known/acme-challenge/tok"}}`,
		`{"status":"success","order_id":"42","verification":{"method":"HTTP","token":"tok","content":"tok.th"},"new_field":{"x":[1,2]}}`,
		`{"status":1,"order_id":42.0,"verification":{"token":"tok","content":"tok.th","file_path":"/.well-known/acme-challenge/tok"}}`,
	} {
		var w verificationWire
		if _, err := c.decode(OpRequest, 200, "application/json", []byte(body), &w); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		v, err := c.verificationFrom(&w, "a.test", MethodHTTP)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if v.OrderID != 42 || v.Domain != "a.test" || v.Method != MethodHTTP || v.Token != "tok" || v.Content != "tok.th" || v.FilePath != "/.well-known/acme-challenge/tok" {
			t.Errorf("%s: got %+v", body, v)
		}
	}

	// The DNS record name, under whatever name it comes, or by default.
	for body, want := range map[string]string{
		`{"status":true,"order_id":1,"verification":{"method":"dns","content":"v","record":"_acme-challenge.a.test"}}`: "_acme-challenge.a.test",
		`{"status":true,"order_id":1,"verification":{"method":"dns","content":"v","name":"_acme-challenge.a.test."}}`:  "_acme-challenge.a.test",
		`{"status":true,"order_id":1,"verification":{"method":"dns","value":"v","host":"_acme-challenge"}}`:            "_acme-challenge.a.test",
		`{"status":true,"order_id":1,"verification":{"method":"dns","content":"v"}}`:                                   "_acme-challenge.a.test",
	} {
		var w verificationWire
		if _, err := c.decode(OpRequest, 200, "", []byte(body), &w); err != nil {
			t.Fatal(err)
		}
		v, err := c.verificationFrom(&w, "*.a.test", MethodDNS)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if v.RecordName != want || v.Content != "v" {
			t.Errorf("%s: record %q content %q, want %q", body, v.RecordName, v.Content, want)
		}
	}

	// "domains" as one name, a comma-separated list or an array.
	var lw listWire
	body := `{"status":true,"certificates":[{"crt_id":1,"domains":"a.test","add_time":1,"end_time":2},{"crt_id":"2","domains":"a.test, b.test","add_time":1,"end_time":2},{"crt_id":3,"domains":["a.test","b.test"]}],"pending_orders":[{"order_id":5,"domains":"c.test","status":"pending"}]}`
	if _, err := c.decode(OpList, 200, "", []byte(body), &lw); err != nil {
		t.Fatal(err)
	}
	l := listFrom(&lw)
	if len(l.Certificates) != 3 || !slices.Equal(l.Certificates[1].Domains, []string{"a.test", "b.test"}) ||
		!slices.Equal(l.Certificates[2].Domains, []string{"a.test", "b.test"}) || l.PendingOrders[0].ID != 5 {
		t.Errorf("list = %+v", l)
	}
}

// A required field missing or malformed is an error naming the field.
func TestRequiredFields(t *testing.T) {
	c := &Client{token: testSecret}
	cases := map[string]string{
		`{"status":true,"verification":{"token":"t","content":"c"}}`:                                 "order_id",
		`{"status":true,"order_id":-3,"verification":{"token":"t","content":"c"}}`:                   "order_id",
		`{"status":true,"order_id":3,"verification":{"token":"t"}}`:                                  "verification.content",
		`{"status":true,"order_id":3,"verification":{"content":"c"}}`:                                "verification.token",
		`{"status":true,"order_id":3,"verification":{"token":"t","content":"c","method":"carrier"}}`: "verification.method",
		`{"status":true,"order_id":3,"verification":{"token":"t","content":"c","file_path":"x/y"}}`:  "verification.file_path",
		`{"status":true,"order_id":[3],"verification":{"token":"t","content":"c"}}`:                  "order_id",
		`{"status":true,"order_id":3,"verification":"http"}`:                                         "verification",
	}
	for body, field := range cases {
		var w verificationWire
		_, derr := c.decode(OpRequest, 200, "", []byte(body), &w)
		var err error = derr
		if derr == nil {
			_, err = c.verificationFrom(&w, "a.test", MethodHTTP)
		}
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: err = %v, want malformed naming %s", body, err, field)
		}
	}
	for body, field := range map[string]string{
		`{"status":true,"ca":"x"}`:        "crt",
		`{"status":true,"crt":"not pem"}`: "crt",
		`{"status":true,"crt":"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----","ca":"junk"}`:  "ca",
		`{"status":true,"crt":"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----","key":"junk"}`: "key",
	} {
		var w finalizeWire
		if _, err := c.decode(OpFinalize, 200, "", []byte(body), &w); err != nil {
			t.Fatal(err)
		}
		if _, err := certificateFrom(&w); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "field "+field) {
			t.Errorf("%s: err = %v, want malformed naming %s", body, err, field)
		}
	}
}

func TestSanitize(t *testing.T) {
	in := "<html>\n<body><h1>Error</h1>\n\ttoken " + testSecret + " was\x00 bad</body></html>" + strings.Repeat("x", 500)
	out := sanitize(in, testSecret)
	if strings.Contains(out, testSecret) || strings.ContainsAny(out, "<>\n\t\x00") || len(out) > maxExcerpt+10 {
		t.Errorf("sanitize = %q", out)
	}
	if !strings.HasPrefix(out, "Error token [REDACTED] was bad") {
		t.Errorf("sanitize = %q", out)
	}
}

// FuzzSanitize: whatever the server sends, an excerpt is short and never
// holds the token or a PEM block.
func FuzzSanitize(f *testing.F) {
	for _, seed := range []string{
		"<html><body>-----BEGIN PRIVATE KEY-----\nMIG\n-----END PRIVATE KEY-----</body></html>",
		"BE<b>GIN</b> PRIVATE<!-- -->KEY &#66;EGIN secret-&#116;oken-0123456789",
		"<style>x</style><script>BEGIN</script>< a <b",
		"secret-token-" + testSecret + "-0123456789",
	} {
		f.Add(seed, "text/html")
	}
	f.Fuzz(func(t *testing.T, body, ctype string) {
		out := excerpt(ctype, []byte(body), testSecret)
		for _, banned := range []string{testSecret, "BEGIN", "PRIVATE KEY"} {
			if strings.Contains(out, banned) {
				t.Fatalf("excerpt %q carries %q", out, banned)
			}
		}
		if s := sanitize(body, testSecret); len(s) > maxExcerpt+len("…") {
			t.Fatalf("sanitize gave %d bytes", len(s))
		}
	})
}

// FuzzDecode feeds arbitrary bodies and statuses to every operation's
// decoding: it must never panic, and an error must never carry the token,
// even when the body does.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"status":true,"domain":"a.test","order_id":42,"verification":{"method":"http","token":"t","content":"t.x","file_path":"/.well-known/acme-challenge/t"}}`,
		`{"status":true,"order_id":"7","verification":{"method":"dns","content":"v","record":"_acme-challenge.a.test"}}`,
		`{"status":true,"key":"-----BEGIN PRIVATE KEY-----\n","csr":"","crt":"-----BEGIN CERTIFICATE-----\n","ca":"","details":{"subject":{"CN":"a"},"san":"DNS:a"}}`,
		`{"status":true,"certificates":[{"crt_id":1,"domains":"a, b","add_time":1,"end_time":2}],"pending_orders":[{"order_id":5,"domains":["c"],"status":"pending"}]}`,
		`{"status":false,"message":"bad token ` + testSecret + `"}`,
		`{"status":"pending","message":"verification in progress"}`,
		`{"status":false,"error":{"code":3}}`,
		`<html><body>502 ` + testSecret + `</body></html>`,
		`{"status": true, "order_id": `,
		`{"status":false,"message":"secret-<b>token-0123456789</b>"}`,
		`{"status":true,"key":"-----BEGIN PRIVATE KEY-----\nMIGHAgEA`,
		`{"status":false,"message":"bad key -----BEGIN PRIVATE KEY-----\nMIG\n-----END PRIVATE KEY-----"}`,
		``,
	} {
		f.Add(200, []byte(seed))
		f.Add(400, []byte(seed))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		c := &Client{token: testSecret}
		check := func(err error) {
			if err == nil {
				return
			}
			for _, banned := range []string{testSecret, "BEGIN", "PRIVATE KEY"} {
				if strings.Contains(err.Error(), banned) {
					t.Fatalf("error carries %q: %v", banned, err)
				}
			}
		}
		var vw verificationWire
		if _, err := c.decode(OpRequest, status, "text/html", body, &vw); err != nil {
			check(err)
		} else {
			_, err := c.verificationFrom(&vw, "a.test", MethodDNS)
			check(err)
		}
		var fw finalizeWire
		if _, err := c.decode(OpFinalize, status, "", body, &fw); err != nil {
			check(err)
		} else {
			_, err := certificateFrom(&fw)
			check(err)
		}
		var lw listWire
		if _, err := c.decode(OpList, status, "", body, &lw); err != nil {
			check(err)
		} else {
			listFrom(&lw)
		}
	})
}

// BenchmarkDecodeFinalize decodes a finalize answer as the documented
// service sends it (a key, a CSR, the certificate and its chain, details).
func BenchmarkDecodeFinalize(b *testing.B) {
	c := &Client{token: testSecret}
	pemBlock := func(kind string, n int) string {
		return "-----BEGIN " + kind + "-----\n" + strings.Repeat(strings.Repeat("A", 64)+"\n", n) + "-----END " + kind + "-----\n"
	}
	body, err := json.Marshal(map[string]any{
		"status": true, "key": pemBlock("PRIVATE KEY", 4), "csr": pemBlock("CERTIFICATE REQUEST", 6),
		"crt": pemBlock("CERTIFICATE", 12), "ca": pemBlock("CERTIFICATE", 12),
		"details": map[string]any{"subject": map[string]string{"CN": "a.test"}, "valid_from": "2026-12-02", "valid_to": "2027-03-02", "san": "DNS:a.test"},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var w finalizeWire
		if _, err := c.decode(OpFinalize, 200, "application/json", body, &w); err != nil {
			b.Fatal(err)
		}
	}
}
