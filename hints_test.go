package sslci_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	sslci "github.com/sslci/caddy-sslci"
	"github.com/sslci/caddy-sslci/api"
	"github.com/sslci/caddy-sslci/internal/testport"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// Each failure whose cause is known ends with the sentence that says what
// to do; none shows the token. What they produce (errors and log lines) is
// what the README's Troubleshooting section must quote.
func TestHintsAndTroubleshooting(t *testing.T) {
	const wrongToken = "not-the-token-0123456789"
	var produced []string // every error and log line of the cases below
	issue := func(t *testing.T, e *testEnv, iss *sslci.Issuer, name string) error {
		t.Helper()
		csr, _ := sslcitest.NewCSR(t, name)
		_, err := iss.Issue(context.Background(), csr)
		if err == nil {
			t.Fatal("Issue succeeded")
		}
		produced = append(produced, err.Error())
		t.Log(err)
		for _, secret := range []string{e.sim.Token(), wrongToken} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows a token: %v", err)
			}
		}
		e.checkNothingLeft(t)
		return err
	}
	wantSays := func(t *testing.T, err error, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
		if strings.Count(err.Error(), "sslci: ") != 1 {
			t.Errorf("error %q does not say sslci: exactly once", err)
		}
	}

	t.Run("nothing answers the HTTP check", func(t *testing.T) {
		e := newEnv(t, sslcitest.Options{})
		iss := e.startIssuer(nil)
		e.sim.SetHTTPChallengeAddr(fmt.Sprintf("127.0.0.1:%d", testport.Get(t)))
		err := issue(t, e, iss, "unreached.test")
		wantSays(t, err, "confirming the verification",
			fmt.Sprintf("SSLCI must reach http://unreached.test/.well-known/acme-challenge/ on port 80 and find this Caddy there (port 80 forwarded to its port %d)", e.httpPort),
			"alt_http_port", "verify by DNS", "`caddy sslci check unreached.test`")
		if !errors.Is(err, api.ErrInvalidRequest) {
			t.Errorf("error %q lost its kind", err)
		}
	})

	t.Run("another program holds the HTTP port", func(t *testing.T) {
		e := newEnv(t, sslcitest.Options{})
		e.newLog()
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", e.httpPort))
		if err != nil {
			t.Fatal(err)
		}
		other := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Server", "other-program")
			http.NotFound(w, r)
		})}
		go other.Serve(ln)
		defer other.Close()
		iss := e.startIssuer(nil)
		err = issue(t, e, iss, "taken.test")
		wantSays(t, err, "SSLCI must reach http://taken.test/.well-known/acme-challenge/ on port 80")
		warnings := e.logLines("another program holds the HTTP port and does not answer SSLCI's check, which will fail; " +
			"stop it, or have it pass /.well-known/acme-challenge/ to a free port set as alt_http_port (the issuer answers there), or verify by DNS")
		if len(warnings) != 1 || warnings[0]["port"] != float64(e.httpPort) || warnings[0]["server"] != "other-program" ||
			warnings[0]["status"] != float64(404) || warnings[0]["identifier"] != "taken.test" {
			t.Errorf("warnings = %v, want one naming port %d and what answered", warnings, e.httpPort)
		}
		for _, l := range warnings {
			produced = append(produced, fmt.Sprint(l["msg"]))
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		e := newEnv(t, sslcitest.Options{})
		iss := e.startIssuer(map[string]any{"token": wrongToken})
		err := issue(t, e, iss, "token.test")
		wantSays(t, err, "authentication failed (HTTP 401)", "SSLCI refused the API token: check `token`", "SSLCI_TOKEN")
	})

	t.Run("redirect", func(t *testing.T) {
		e := newEnv(t, sslcitest.Options{})
		iss := e.startIssuer(nil)
		e.sim.InjectRedirect(sslcitest.OpRequest, http.StatusMovedPermanently, "https://elsewhere.test/api", 1)
		err := issue(t, e, iss, "redirect.test")
		wantSays(t, err, "redirect refused (HTTP 301)", "Set `endpoint` to the API's own URL")
	})

	t.Run("refused certificate", func(t *testing.T) {
		e := newEnv(t, sslcitest.Options{})
		iss := e.startIssuer(nil)
		e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultWrongNames, 1)
		err := issue(t, e, iss, "refused.test")
		wantSays(t, err, "was refused: the certificate does not cover refused.test", "Nothing was stored: Caddy keeps the certificate it has")
		e.sim.ExpireVerifications()
		iss = e.restartIssuer(map[string]any{"require_csr_key": true})
		err = issue(t, e, iss, "strict.test")
		wantSays(t, err, "require_csr_key is set", "Remove require_csr_key to accept")
	})

	t.Run("still in progress", func(t *testing.T) {
		e := newEnv(t, sslcitest.Options{})
		iss := e.startIssuer(map[string]any{"verification_timeout": "1s"})
		e.sim.InjectFault(sslcitest.OpConfirm, sslcitest.FaultPending, 1000)
		issue(t, e, iss, "pending.test")
	})

	t.Run("record of another account", func(t *testing.T) {
		// Not reachable through Issue: the api error the hint is for.
		e := newEnv(t, sslcitest.Options{Tokens: []string{"account-one-token", "account-two-token"}})
		one, _ := api.New(e.sim.URL(), "account-one-token")
		two, _ := api.New(e.sim.URL(), "account-two-token")
		v, err := one.RequestVerification(context.Background(), "mine.test", api.MethodHTTP)
		if err != nil {
			t.Fatal(err)
		}
		err = two.Delete(context.Background(), api.RecordOrder, v.OrderID)
		if !errors.Is(err, api.ErrForbidden) {
			t.Fatalf("Delete of another account's order = %v, want forbidden", err)
		}
		produced = append(produced, err.Error())
		if hinted := sslci.Hint(err).Error(); !strings.Contains(hinted, "The record belongs to another SSLCI account than this token's") {
			t.Errorf("403 hint missing: %s", hinted)
		}
	})

	t.Run("README quotes what the code says", func(t *testing.T) {
		if len(produced) < 8 {
			t.Skip("needs what the cases above produce: run the whole test")
		}
		quotes := troubleshootingQuotes(t)
		if len(quotes) < 8 {
			t.Fatalf("the Troubleshooting section quotes %d error texts, want each entry's", len(quotes))
		}
		source := goSource(t)
		for _, q := range quotes {
			re := regexp.MustCompile(strings.NewReplacer(`<name>`, `\S+`, `<n>`, `\d+`, `<duration>`, `\S+`).Replace(regexp.QuoteMeta(q)))
			found := re.MatchString(source)
			for _, p := range produced {
				found = found || re.MatchString(p)
			}
			if !found {
				t.Errorf("README Troubleshooting quotes %q, which no error of these cases and no Go source contains", q)
			}
		}
	})
}

// troubleshootingQuotes are the README Troubleshooting section's headings:
// each is an error text in backquotes.
func troubleshootingQuotes(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	start := strings.Index(md, "\n## Troubleshooting\n")
	if start < 0 {
		t.Fatal("README has no Troubleshooting section")
	}
	section := md[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	var quotes []string
	for _, m := range regexp.MustCompile("(?m)^### `([^`]+)`$").FindAllStringSubmatch(section, -1) {
		quotes = append(quotes, m[1])
	}
	return quotes
}

// goSource is the text of the module's non-test Go files.
func goSource(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			data, err := os.ReadFile(p)
			b.Write(data)
			return err
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
