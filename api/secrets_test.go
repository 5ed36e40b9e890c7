package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sslci/caddy-sslci/api"
)

const keyPEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgKEYMATERIAL\n-----END PRIVATE KEY-----\n"

// serve answers every request with status, content type and body.
func serve(t *testing.T, status int, ctype, body string) *api.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	c, err := api.New(srv.URL+"/api", testToken)
	if err != nil {
		t.Fatal(err)
	}
	c.Retry.MaxAttempts = 1
	return c
}

func assertAbsent(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	for _, s := range append(secrets, testToken) {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error shows %q: %v", s, err)
		}
	}
}

// A finalize answer cut short starts with the private key: it is not quoted.
func TestTruncatedFinalizeNotExcerpted(t *testing.T) {
	body := `{"status":true,"key":"` + strings.ReplaceAll(keyPEM, "\n", `\n`)[:90]
	c := serve(t, 200, "application/json", body)
	_, err := c.Finalize(context.Background(), []string{"a.example.test"}, nil)
	if !errors.Is(err, api.ErrMalformed) || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("err = %v, want malformed with the size", err)
	}
	assertAbsent(t, err, "BEGIN", "PRIVATE KEY", "MIGHAgEA")
}

// A PEM block in any other excerpt is removed, whole or cut short.
func TestPEMRemovedFromExcerpts(t *testing.T) {
	for name, body := range map[string]string{
		"whole":    "<html><body><pre>Fatal: " + keyPEM + "</pre> at line 3</body></html>",
		"cut":      "<html><body><pre>Fatal: " + keyPEM[:60],
		"json 500": `Fatal: {"key":"` + strings.ReplaceAll(keyPEM, "\n", `\n`) + `"} at line 3`,
	} {
		t.Run(name, func(t *testing.T) {
			c := serve(t, 500, "text/html", body)
			_, err := c.List(context.Background())
			if !errors.Is(err, api.ErrServer) || !strings.Contains(err.Error(), "Fatal: ") || !strings.Contains(err.Error(), "[PEM block removed]") {
				t.Fatalf("err = %v, want the PEM block replaced", err)
			}
			if name != "cut" && !strings.Contains(err.Error(), "at line 3") {
				t.Errorf("err = %v, want the text after the block kept", err)
			}
			assertAbsent(t, err, "BEGIN", "PRIVATE KEY", "MIGHAgEA", "MATERIAL")
		})
	}
}

// An HTML error page reads as its text, with its type and size.
func TestHTMLPageExcerpt(t *testing.T) {
	page := "<html>\r\n<head><title>404 Not Found</title>\n<style>\nbody { font-family: sans-serif; }\n</style></head>\n" +
		"<body>\n<!-- a comment > with a bracket -->\n<center><h1>404 Not Found</h1></center>\n<hr><center>nginx &amp; <b>friends</b> say 1 < 2</center>\n</body>\n</html>\n"
	c := serve(t, 404, "text/html; charset=utf-8", page)
	_, err := c.List(context.Background())
	want := fmt.Sprintf("text/html, %d bytes: 404 Not Found 404 Not Found nginx & friends say 1 < 2", len(page))
	if !errors.Is(err, api.ErrNotFound) || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("err = %q, want it to end with %q", err, want)
	}
}

// The endpoint's query and user info are never echoed.
func TestCheckEndpointRedacts(t *testing.T) {
	for endpoint, says := range map[string]string{
		"https://www.sslci.com/api?token=" + testToken:       "a query string",
		"https://user:" + testToken + "@www.sslci.com/api":   "user info",
		"http://10.0.0.1/api?token=" + testToken:             "a query string",
		"https://www.sslci.com/api#" + testToken:             "a fragment",
		"https://www.sslci.com/%zz?token=" + testToken:       "not an absolute URL",
		"www.sslci.com/api?token=" + testToken:               "not an absolute URL",
		"https://" + testToken + ":x@www.sslci.com/api?q=a":  "user info and a query string",
		"https://www.sslci.com/api?" + testToken + "-as-key": "a query string",
	} {
		err := api.CheckEndpoint(endpoint)
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("CheckEndpoint(%q) = %v, want it to say %q", endpoint, err, says)
			continue
		}
		assertAbsent(t, err)
		if _, err := api.New(endpoint, testToken); err == nil {
			t.Errorf("New(%q) accepted", endpoint)
		} else {
			assertAbsent(t, err)
		}
	}
}
