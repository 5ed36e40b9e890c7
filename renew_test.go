package sslci_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/sslci/caddy-sslci/internal/ledger"
	"github.com/sslci/caddy-sslci/internal/testport"
	"github.com/sslci/caddy-sslci/sslcitest"
)

// adminFailed is what the admin API logs when a renewal it was asked for fails.
const adminFailed = "renewal asked through the admin API failed"

// waitForLogLines waits until Caddy has logged n lines with message msg,
// and returns the last.
func (e *testEnv) waitForLogLines(msg string, n int) map[string]any {
	e.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if lines := e.logLines(msg); len(lines) >= n {
			return lines[n-1]
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("Caddy logged %q fewer than %d times", msg, n)
		}
	}
}

type renewOutput struct {
	Results []struct {
		Name        string    `json:"name"`
		Renewed     bool      `json:"renewed"`
		Serial      string    `json:"serial"`
		NotAfter    time.Time `json:"not_after"`
		RenewsAfter time.Time `json:"renews_after"`
		Error       string    `json:"error"`
	} `json:"results"`
	Error string `json:"error"`
}

// `caddy sslci renew` against one running Caddy, through its real admin
// endpoint: a fresh certificate is not due and nothing is asked of SSLCI;
// --force renews it with one finalize and the next handshake gets the
// serial printed; the issuer's error is printed and the certificate
// served stays; a held lock bounds the renewal by --timeout, and a
// client that goes away cancels it; names not managed by an sslci issuer,
// bad requests to the route, admin off and nothing at the address are
// refused, saying so.
func TestRenewCommand(t *testing.T) {
	const name = "renew-cmd.sslci.test"
	e := newEnv(t, sslcitest.Options{})
	caddyfile := e.writeCaddyfile("", name)
	e.startCaddy(e.withLog(adapt(t, mustRead(t, caddyfile))))
	served := e.waitForCertificate(name, nil, time.Minute)

	servedNow := func(t *testing.T) string {
		t.Helper()
		leaf, err := e.handshake(name)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return hexSerial(leaf)
	}
	renew := func(t *testing.T, args ...string) (renewOutput, error) {
		t.Helper()
		out, err := e.runSSLCI(append([]string{"renew", "--config", caddyfile, "--json"}, args...)...)
		var got renewOutput
		if out != "" {
			if jerr := json.Unmarshal([]byte(out), &got); jerr != nil {
				t.Fatalf("renew --json is not JSON: %v\n%s", jerr, out)
			}
		}
		return got, err
	}

	t.Run("not due", func(t *testing.T) {
		before := e.counts()
		out, err := e.runSSLCI("renew", "--config", caddyfile, name)
		if err != nil {
			t.Fatalf("renew: %v\n%s", err, out)
		}
		t.Logf("caddy sslci renew %s:\n%s", name, out)
		for _, want := range []string{name, hexSerial(served), "not due: renews after", "--force"} {
			if !strings.Contains(out, want) {
				t.Errorf("output does not say %q:\n%s", want, out)
			}
		}
		if after := e.counts(); !maps.Equal(after, before) {
			t.Errorf("simulator requests went from %v to %v: a renewal not due asked SSLCI", before, after)
		}
		if got := servedNow(t); got != hexSerial(served) {
			t.Errorf("served serial %s, want the unchanged %s", got, hexSerial(served))
		}
	})

	t.Run("force", func(t *testing.T) {
		e.sim.ResetRequests()
		out, err := e.runSSLCI("renew", "--config", caddyfile, "--force", name)
		if err != nil {
			t.Fatalf("renew --force: %v\n%s", err, out)
		}
		t.Logf("caddy sslci renew --force %s:\n%s", name, out)
		leaf, err := e.handshake(name)
		if err != nil {
			t.Fatal(err)
		}
		if leaf.Equal(served) {
			t.Fatalf("after renew --force Caddy still serves serial %s", hexSerial(leaf))
		}
		if !strings.Contains(out, hexSerial(leaf)) || !strings.Contains(out, "renewed") {
			t.Errorf("output does not give the served serial %s as renewed:\n%s", hexSerial(leaf), out)
		}
		// The 90-day certificate's verification was not recorded (its due
		// renewal, at day 60, could not reuse it): a forced renewal
		// verifies the name again.
		e.wantCounts(map[sslcitest.Op]int{sslcitest.OpRequest: 1, sslcitest.OpConfirm: 1, sslcitest.OpFinalize: 1})
		if !e.storedKeyMatches(name, leaf) {
			t.Error("the key in storage is not the served certificate's")
		}
		served = leaf
	})

	t.Run("issuer error", func(t *testing.T) {
		e.sim.InjectFault(sslcitest.OpFinalize, sslcitest.FaultUnknownRoot, 1)
		got, err := renew(t, "--force", name)
		if err == nil {
			t.Fatalf("renew --force with a refused certificate succeeded: %+v", got)
		}
		if len(got.Results) != 1 || got.Results[0].Renewed {
			t.Fatalf("results = %+v, want one, not renewed", got.Results)
		}
		r := got.Results[0]
		for _, want := range []string{"trusted_roots", "SSLCI Simulator Intermediate CA"} {
			if !strings.Contains(r.Error, want) {
				t.Errorf("error %q does not say %q", r.Error, want)
			}
		}
		if want := hexSerial(served); r.Serial != want || servedNow(t) != want {
			t.Errorf("after the refused renewal: printed serial %s, served %s; want the current %s", r.Serial, servedNow(t), want)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		// certmagic's lock of the name, held as by a renewal under way.
		lock := &certmagic.FileStorage{Path: e.storageDir}
		if err := lock.Lock(context.Background(), ledger.IssueLock(name)); err != nil {
			t.Fatal(err)
		}
		defer lock.Unlock(context.Background(), ledger.IssueLock(name))
		e.sim.ResetRequests()
		got, err := renew(t, "--force", "--timeout", "1s", name)
		if err == nil || len(got.Results) != 1 || !strings.Contains(got.Results[0].Error, "not done within 1s") {
			t.Fatalf("renew --timeout 1s with the lock held: %v, %+v; want an error saying the timeout", err, got)
		}
		if n := len(e.sim.Requests()); n != 0 {
			t.Errorf("%d requests reached SSLCI", n)
		}
		if want := hexSerial(served); servedNow(t) != want {
			t.Errorf("served serial %s, want the unchanged %s", servedNow(t), want)
		}
	})

	t.Run("client gone", func(t *testing.T) {
		lock := &certmagic.FileStorage{Path: e.storageDir}
		if err := lock.Lock(context.Background(), ledger.IssueLock(name)); err != nil {
			t.Fatal(err)
		}
		e.sim.ResetRequests()
		waiting, failed := len(e.logLines("acquiring lock")), len(e.logLines(adminFailed))
		admin := fmt.Sprintf("127.0.0.1:%d", e.adminPort)
		conn, err := net.Dial("tcp", admin)
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf(`{"names":[%q],"force":true}`, name)
		fmt.Fprintf(conn, "POST /sslci/renew HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", admin, len(body), body)
		e.waitForLogLines("acquiring lock", waiting+1)
		conn.Close()
		line := e.waitForLogLines(adminFailed, failed+1)
		if msg, _ := line["error"].(string); !strings.Contains(msg, "context canceled") {
			t.Errorf("the renewal ended with %q, want it cancelled", msg)
		}
		lock.Unlock(context.Background(), ledger.IssueLock(name))
		if got, err := e.runSSLCI("renew", "--config", caddyfile, name); err != nil || !strings.Contains(got, "not due") {
			t.Errorf("renew after the cancelled one: %v\n%s", err, got)
		}
		if n := len(e.sim.Requests()); n != 0 {
			t.Errorf("%d requests reached SSLCI after the client left", n)
		}
		if want := hexSerial(served); servedNow(t) != want {
			t.Errorf("served serial %s, want the unchanged %s", servedNow(t), want)
		}
	})

	t.Run("not managed", func(t *testing.T) {
		e.sim.ResetRequests()
		for _, args := range [][]string{{"other.sslci.test"}, {"--force", name, "other.sslci.test"}} {
			out, err := e.runSSLCI(append([]string{"renew", "--config", caddyfile}, args...)...)
			if err == nil || !strings.Contains(err.Error(), "other.sslci.test is not managed by an sslci issuer") {
				t.Errorf("renew %v: %v\n%s; want an error naming the name", args, err, out)
			}
		}
		if n := len(e.sim.Requests()); n != 0 {
			t.Errorf("%d requests reached SSLCI: nothing is renewed when a name is refused", n)
		}
	})

	t.Run("admin route", func(t *testing.T) {
		url := fmt.Sprintf("http://127.0.0.1:%d/sslci/renew", e.adminPort)
		for _, tc := range []struct {
			method, body string
			status       int
			want         string
		}{
			{http.MethodGet, "", http.StatusMethodNotAllowed, "use POST"},
			{http.MethodPost, `{"names":`, http.StatusBadRequest, "reading the request"},
			{http.MethodPost, `{"names":[]}`, http.StatusBadRequest, "no names"},
			{http.MethodPost, `{"names":["x.test"],"forced":true}`, http.StatusBadRequest, "unknown field"},
			{http.MethodPost, `{"names":["nope.sslci.test"]}`, http.StatusNotFound, "nope.sslci.test is not managed by an sslci issuer"},
			{http.MethodPost, fmt.Sprintf(`{"names":[%q]}`, name), http.StatusOK, `"renews_after"`},
		} {
			req, _ := http.NewRequest(tc.method, url, strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !bytes.Contains(body, []byte(tc.want)) {
				t.Errorf("%s %s: %d %s; want %d with %q", tc.method, tc.body, resp.StatusCode, body, tc.status, tc.want)
			}
		}
	})

	t.Run("admin off or unreachable", func(t *testing.T) {
		off := filepath.Join(t.TempDir(), "Caddyfile")
		if err := os.WriteFile(off, []byte("{\n\tadmin off\n}\n\n"+name+" {\n\trespond hello\n}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := e.runSSLCI("renew", "--config", off, name)
		if err == nil || !strings.Contains(err.Error(), "admin endpoint is off in "+off) {
			t.Errorf("renew with admin off: %v; want an error saying so", err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", testport.Get(t))
		_, err = e.runSSLCI("renew", "--address", addr, name)
		if err == nil || !strings.Contains(err.Error(), "no admin endpoint answers at "+addr) {
			t.Errorf("renew --address %s (nothing there): %v; want an error naming the address", addr, err)
		}
	})

	// The README's third example, last: with SSLCI gone (its listener
	// closed), the table says FAILED with the issuer's error, and the
	// served certificate stays.
	t.Run("SSLCI unreachable", func(t *testing.T) {
		e.sim.Close()
		out, err := e.runSSLCI("renew", "--config", caddyfile, "--force", name)
		t.Logf("caddy sslci renew --force, SSLCI unreachable:\n%s", out)
		want := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` +` + hexSerial(served) + ` +\S+ \S+ +FAILED: sslci: .*` + regexp.QuoteMeta(name) + `.*: connection failed: .*connection refused$`)
		if err == nil || !want.MatchString(out) {
			t.Errorf("renew --force with SSLCI unreachable: %v\n%s\nwant a line matching %s", err, out, want)
		}
		if want := hexSerial(served); servedNow(t) != want {
			t.Errorf("served serial %s, want the unchanged %s", servedNow(t), want)
		}
	})
}

// hexSerial is the serial as renew prints it (and openssl x509 -serial).
func hexSerial(c *x509.Certificate) string { return fmt.Sprintf("%X", c.SerialNumber) }
